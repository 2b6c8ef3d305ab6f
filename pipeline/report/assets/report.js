// The report's own script: draws the figures (plotly.js), runs the frame players, moves the cursor
// on the time plots with the player, and sorts tables. window.__reportReady is set once the player
// works and the plots on the first screen are drawn, window.__reportAllDrawn once every plot is.
(function () {
  "use strict";
  window.__reportScriptAt = performance.now();
  var spec = JSON.parse(document.getElementById("report-figures").textContent);
  var base = {
    font: { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 12, color: "#1d2330" },
    paper_bgcolor: "#ffffff", plot_bgcolor: "#fbfcfd", hoverlabel: { namelength: -1 },
    title: { x: 0, xanchor: "left", xref: "paper", font: { size: 14 } }
  };
  var config = { displaylogo: false, responsive: true, displayModeBar: "hover",
                 modeBarButtonsToRemove: ["select2d", "lasso2d"] };
  var cursorPlots = {};    // episode -> [plot elements with a cursor]
  var cursorAt = {};       // episode -> step the cursor shows
  var players = {};        // episode -> Player
  var visible = new Set();
  var stale = new Set();

  function applyCursor(gd) {
    var step = cursorAt[gd.dataset.episode];
    if (step === undefined || !gd.layout || !gd.layout.shapes || !gd.layout.shapes.length) return;
    stale.delete(gd);
    Plotly.relayout(gd, { "shapes[0].x0": step, "shapes[0].x1": step, "shapes[0].visible": true });
  }

  var observer = "IntersectionObserver" in window ? new IntersectionObserver(function (entries) {
    entries.forEach(function (entry) {
      if (entry.isIntersecting) {
        visible.add(entry.target);
        if (stale.has(entry.target)) applyCursor(entry.target);
      } else {
        visible.delete(entry.target);
      }
    });
  }, { rootMargin: "200px" }) : null;

  var pending = {};
  function moveCursor(episode, step) {
    cursorAt[episode] = step;
    if (pending[episode]) return;
    pending[episode] = true;
    window.requestAnimationFrame(function () {
      pending[episode] = false;
      (cursorPlots[episode] || []).forEach(function (gd) {
        if (!observer || visible.has(gd)) applyCursor(gd); else stale.add(gd);
      });
    });
  }

  function Player(root, data) {
    this.root = root;
    this.data = data;
    this.index = 0;
    this.timer = null;
    this.img = root.querySelector("img.frame");
    this.slider = root.querySelector(".slider");
    this.button = root.querySelector(".play");
    this.speed = root.querySelector(".speed");
    this.stepLabel = root.querySelector(".step");
    this.counter = root.querySelector(".counter");
    var self = this;
    this.slider.addEventListener("input", function () { self.pause(); self.show(+self.slider.value); });
    this.button.addEventListener("click", function () { if (self.timer) self.pause(); else self.play(); });
    this.speed.addEventListener("change", function () { if (self.timer) { self.pause(); self.play(); } });
    this.img.addEventListener("load", function () {
      self.img.style.imageRendering = self.img.naturalWidth < self.img.clientWidth ? "pixelated" : "auto";
    });
    root.addEventListener("keydown", function (event) {
      if (event.key === " " && event.target !== self.button) { event.preventDefault(); self.button.click(); }
    });
  }
  Player.prototype.show = function (index) {
    var n = this.data.steps.length;
    this.index = Math.max(0, Math.min(n - 1, index));
    var step = this.data.steps[this.index];
    this.img.src = this.data.sources[this.index];
    this.img.alt = "frame of step " + step;
    this.slider.value = String(this.index);
    this.stepLabel.textContent = "step " + step;
    this.counter.textContent = "frame " + (this.index + 1).toLocaleString() + " of " + n.toLocaleString();
    this.root.dataset.step = String(step);
    this.root.dataset.index = String(this.index);
    moveCursor(this.data.episode, step);
  };
  Player.prototype.play = function () {
    var self = this;
    if (this.index >= this.data.steps.length - 1) this.show(0);
    this.timer = window.setInterval(function () {
      if (self.index >= self.data.steps.length - 1) { self.pause(); return; }
      self.show(self.index + 1);
    }, 1000 / (+this.speed.value || 10));
    this.button.textContent = "❚❚ Pause";
    this.button.setAttribute("aria-label", "pause");
    this.root.dataset.playing = "true";
  };
  Player.prototype.pause = function () {
    if (this.timer) window.clearInterval(this.timer);
    this.timer = null;
    this.button.textContent = "▶ Play";
    this.button.setAttribute("aria-label", "play");
    this.root.dataset.playing = "false";
  };
  Player.prototype.seekStep = function (step) {
    var steps = this.data.steps, low = 0, high = steps.length - 1;
    while (low < high) {  // the last frame at or before the step
      var mid = (low + high + 1) >> 1;
      if (steps[mid] <= step) low = mid; else high = mid - 1;
    }
    this.pause();
    this.show(low);
  };

  function startPlayers() {
    document.querySelectorAll("script.frames-data").forEach(function (element) {
      var data = JSON.parse(element.textContent);
      var root = document.getElementById(data.id);
      var player = new Player(root, data);
      players[data.episode] = player;
      player.show(0);
    });
  }

  function sortable(table) {
    table.querySelectorAll("th").forEach(function (th, column) {
      th.addEventListener("click", function () {
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var ascending = th.dataset.order !== "asc";
        table.querySelectorAll("th").forEach(function (other) { delete other.dataset.order; });
        th.dataset.order = ascending ? "asc" : "desc";
        rows.sort(function (a, b) {
          var x = a.cells[column].dataset.value, y = b.cells[column].dataset.value;
          var nx = parseFloat(x), ny = parseFloat(y);
          var order = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
          return ascending ? order : -order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  }

  function nextFrame() { return new Promise(function (resolve) { window.setTimeout(resolve, 0); }); }

  var drawTimes = window.__reportDrawTimes = [];  // [figure key, ms]: read by the benchmark
  var undrawn = spec.figures.slice();

  async function draw(figure) {
    var gd = document.getElementById(figure.id);
    var layout = Object.assign({}, base, figure.layout);
    layout.title = Object.assign({}, base.title, figure.layout.title);
    var started = performance.now();
    try {
      await Plotly.newPlot(gd, figure.data, layout, config);
    } catch (error) {
      console.error("report: figure " + figure.key + " could not be drawn: " + error);
      return;
    }
    drawTimes.push([figure.key, Math.round(performance.now() - started)]);
    gd.style.height = "";
    gd.dataset.drawn = "true";
    if (figure.cursor && figure.episode) {
      gd.dataset.episode = figure.episode;
      (cursorPlots[figure.episode] = cursorPlots[figure.episode] || []).push(gd);
      if (observer) observer.observe(gd);
      if (cursorAt[figure.episode] !== undefined) applyCursor(gd);
      gd.on("plotly_click", function (event) {
        var player = players[figure.episode];
        if (player && event.points && event.points.length) player.seekStep(+event.points[0].x);
      });
    }
  }

  function inView(figure, margin) {
    var box = document.getElementById(figure.id).getBoundingClientRect();
    return box.height > 0 && box.bottom > -margin && box.top < window.innerHeight + margin;
  }

  // The next figure to draw: one on screen first (the reader is looking there), else the next in the page.
  function next() {
    var index = undrawn.findIndex(function (figure) { return inView(figure, 100); });
    return undrawn.splice(index < 0 ? 0 : index, 1)[0];
  }

  // Figures on screen are drawn first; the page is then interactive (__reportReady) while the others are
  // drawn in the background, one at a time between the browser's own work (__reportAllDrawn).
  async function drawAll() {
    var onScreen = undrawn.filter(function (figure) { return inView(figure, 100); });
    for (var i = 0; i < onScreen.length; i++) {
      undrawn.splice(undrawn.indexOf(onScreen[i]), 1);
      await draw(onScreen[i]);
    }
    window.__reportReadyAt = performance.now();
    window.__reportReadyFigures = onScreen.length;
    window.__reportReady = true;
    document.documentElement.dataset.reportReady = "true";
    while (undrawn.length) {
      await nextFrame();
      await draw(next());
    }
    window.__reportAllDrawnAt = performance.now();
    window.__reportAllDrawn = true;
    document.documentElement.dataset.reportAllDrawn = "true";
  }

  document.querySelectorAll("table.data.sortable").forEach(sortable);
  document.querySelectorAll("details").forEach(function (details) {
    details.addEventListener("toggle", function () {
      if (details.open) details.querySelectorAll(".js-plotly-plot").forEach(function (gd) { Plotly.Plots.resize(gd); });
    });
  });
  startPlayers();
  drawAll().catch(function (error) {
    console.error("report: " + error);
  });
})();
