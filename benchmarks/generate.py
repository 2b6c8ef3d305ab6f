"""Write large, valid episode files that look like real exports: deterministic, seeded, streamed.

    python -m benchmarks.generate --profile teams --size 100MB --seed 0 -o bench-data/teams.json

Profiles (every file follows the rules of FORMAT.md):

- ``frames``: one agent (a lunar lander), 8-float observation, discrete action, scalar reward, and
  a base64 PNG of the rendered 600x400 scene on every step (a few KB each);
- ``teams``: two team agents per step, each with 3-10 unit steps; 3-component reward vectors named
  by ``training.reward_mapping``; 8x8 observations, action distributions, health, value estimates,
  enemy health lists, and custom metrics on some steps;
- ``pixels``: one agent with an 84x84 grayscale observation (integers 0-255, a Breakout screen
  after the usual Atari preprocessing) on every step, no frames;
- ``vector``: ``frames`` without the frames; small episodes of it fill the read-side lakes.

The document is written one step at a time and never held whole, so a multi-GB file needs a few
MB of memory. Step ``i`` does not depend on the target size: with the same seed, a smaller file's
steps are a prefix of a larger one's. Observations are float32 values written the way
``json.dumps(obs.tolist())`` writes them (17 significant digits), the most common export.
Numbers are drawn with numpy in blocks of steps and each step is encoded by orjson, so 1 GB takes
well under a minute or two; the frames are a pool of distinct PNGs drawn once with Pillow and
cycled in order, like an agent replaying a landing.
"""

from __future__ import annotations

import argparse
import base64
import functools
import io
import math
import os
import random
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from itertools import count
from typing import IO, Any

import numpy as np
import orjson
from PIL import Image, ImageDraw

PROFILES = ("frames", "teams", "pixels", "vector")
# Shapes added for issue 15 (per-step and per-row costs that the first three under-weight); kept apart
# from PROFILES, whose files the smoke test holds to 200 KB (a long_floats step alone is ~140 KB).
SHAPES = ("teams_metrics", "teams_plain", "teams_nounits", "long_floats", "frames64", "frames_jpeg", "random",
          "sparse_frames", "swarm")
ALL_PROFILES = PROFILES + SHAPES
# Bump when the bytes a profile writes change, so cached benchmark files are regenerated.
GENERATOR_VERSION = 1
FRAME_POOL = 50
FRAME_SIZE = (600, 400)
BLOCK = 256  # steps whose random numbers are drawn with one numpy call
_CLOSE = b"]}}\n"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """Bytes in a size like ``200KB``, ``100MB``, ``1GB`` (decimal) or ``64MiB`` (binary)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"not a size: {text!r} (try 200KB, 100MB, 1GB)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "B").upper()])


def format_size(size: int) -> str:
    """The short decimal label of a size (``100MB``), used in file names and tables."""
    for unit in ("GB", "MB", "KB"):
        if size >= _UNITS[unit] and size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return f"{size}B"


@dataclass
class Written:
    """What :func:`write_episode` wrote."""

    steps: int
    bytes: int


def write_episode(out: IO[bytes], profile: str, *, size: int | None = None, steps: int | None = None,
                  seed: int = 0, environment: str | None = None) -> Written:
    """Stream one valid episode of ``profile`` into ``out``, stopping at ``size`` bytes or ``steps`` steps.

    The file is as large as possible without exceeding ``size`` (it always has at least one step).
    """
    if profile not in ALL_PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {', '.join(ALL_PROFILES)}")
    if size is None and steps is None:
        raise ValueError("give a size or a number of steps")
    header, step_chunks = _PROFILE_BUILDERS[profile](seed, environment)
    out.write(header)
    written = len(header) + len(_CLOSE)
    n = 0
    for chunk in step_chunks:
        if steps is not None and n >= steps:
            break
        extra = len(chunk) + (1 if n else 0)
        if size is not None and n and written + extra > size:
            break
        if n:
            out.write(b",")
        out.write(chunk)
        written += extra
        n += 1
    out.write(_CLOSE)
    return Written(steps=n, bytes=written)


def generate_file(path: str | os.PathLike[str], profile: str, *, size: int | None = None,
                  steps: int | None = None, seed: int = 0, environment: str | None = None) -> Written:
    """Write an episode file; it appears under ``path`` only once complete (written beside it, then renamed)."""
    path = os.fspath(path)
    partial = f"{path}.partial-{os.getpid()}"
    try:
        with open(partial, "wb", buffering=1 << 20) as out:
            written = write_episode(out, profile, size=size, steps=steps, seed=seed, environment=environment)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return written


def _header(action_mapping: dict[str, Any] | None, training: dict[str, Any], inference_config: dict[str, Any]) -> bytes:
    parts = [b"{"]
    if action_mapping is not None:
        parts += [b'"action_mapping":', orjson.dumps(action_mapping), b","]
    parts += [b'"training":', orjson.dumps(training),
              b',"inference":{"parallel":false,"config":', orjson.dumps(inference_config), b',"steps":[']
    return b"".join(parts)


def _float32s(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    """float32 draws widened to float64, so they print like ``json.dumps(array.tolist())`` would."""
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(scale) + np.float32(shift)).astype(np.float64)


# -- frames and vector: a lunar lander ------------------------------------------------------------

LANDER_ACTIONS = {"0": "Do nothing", "1": "Fire left engine", "2": "Fire main engine", "3": "Fire right engine"}


def _lander_header(seed: int, environment: str | None) -> bytes:
    training = {
        "environment": environment or "LunarLander-v3",
        "algorithm": "PPO",
        "parallel": False,
        "num_gpus": 0.0,
        "iterations": 1_000_000,
        "config": {"learning_rate": 0.0003, "n_steps": 2048, "batch_size": 64, "gamma": 0.99,
                   "gae_lambda": 0.95, "clip_range": 0.2, "policy": "MlpPolicy", "net_arch": [64, 64]},
    }
    return _header(LANDER_ACTIONS, training, {"deterministic": True, "render_mode": "rgb_array", "seed": seed})


def _lander_agent_steps(seed: int) -> Iterator[dict[str, Any]]:
    """One lander agent step per step: 8 floats (the last two leg contacts), action 0-3, a reward."""
    rng = np.random.default_rng([seed, 1])
    for start in count(0, BLOCK):
        obs = _float32s(rng, (BLOCK, 8), scale=0.6)
        legs = rng.random((BLOCK, 2)) < 0.08
        obs[:, 6:] = legs
        actions = rng.integers(0, 4, BLOCK).tolist()
        rewards = np.round(rng.standard_normal(BLOCK) * 1.5 - 0.2, 4)
        rewards[(np.arange(start, start + BLOCK) % 400) == 399] = 100.0  # a landing ends each attempt
        rewards_list = rewards.tolist()
        for j in range(BLOCK):
            yield {"agent": "lander", "action": actions[j], "reward": rewards_list[j], "observation_space": obs[j]}


def _lander_frame(rng: random.Random, terrain: list[tuple[float, float]], t: int, frames: int) -> bytes:
    """A 600x400 PNG of the lander's scene at time ``t`` of ``frames``: sky, stars, terrain, pad, lander, flame."""
    width, height = FRAME_SIZE
    image = Image.new("RGB", FRAME_SIZE, (0, 0, 0))
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x, y = rng.randrange(width), rng.randrange(height // 2)
        shade = rng.randrange(120, 255)
        draw.point((x, y), fill=(shade, shade, shade))
    draw.polygon([*terrain, (width, height), (0, height)], fill=(255, 255, 255))
    pad_left, pad_right, pad_y = width * 0.4, width * 0.6, terrain[len(terrain) // 2][1]
    for flag_x in (pad_left, pad_right):
        draw.line((flag_x, pad_y, flag_x, pad_y - 50), fill=(255, 255, 255), width=2)
        draw.polygon([(flag_x, pad_y - 50), (flag_x, pad_y - 40), (flag_x + 25, pad_y - 45)], fill=(204, 204, 0))
    # The lander swings down onto the pad over the pool of frames.
    progress = t / max(frames - 1, 1)
    cx = width / 2 + 160 * math.sin(2.3 * progress * math.pi) * (1 - progress)
    cy = 40 + (pad_y - 70) * progress
    angle = 0.5 * math.sin(3 * progress * math.pi) * (1 - progress)

    def rotated(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]

    if t % 3 != 2:
        for _ in range(rng.randrange(4, 14)):
            fx, fy = rng.uniform(-6, 6), rng.uniform(18, 40)
            r = rng.uniform(2, 5)
            (px, py), = rotated([(fx, fy)])
            draw.ellipse((px - r, py - r, px + r, py + r), fill=(255, rng.randrange(80, 200), 0))
    for side in (-1, 1):
        draw.line(rotated([(side * 10, 8), (side * 22, 26)]), fill=(128, 102, 230), width=3)
        draw.rectangle(_box(rotated([(side * 22 - 4, 26), (side * 22 + 4, 29)])), fill=(128, 102, 230))
    draw.polygon(rotated([(-14, 14), (-17, 0), (-10, -12), (10, -12), (17, 0), (14, 14)]),
                 fill=(128, 102, 230), outline=(77, 77, 128))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _box(points: list[tuple[float, float]]) -> tuple[float, float, float, float]:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


@cache
def frame_pool(seed: int, frames: int = FRAME_POOL) -> tuple[str, ...]:
    """``frames`` distinct base64 PNGs of one landing, drawn once and cycled by the frames profile."""
    rng = random.Random(seed)
    width, height = FRAME_SIZE
    chunks = 11
    heights = [rng.uniform(height * 0.7, height * 0.9) for _ in range(chunks + 1)]
    middle = chunks // 2
    for i in (middle - 1, middle, middle + 1):
        heights[i] = height * 0.8  # the flat landing pad
    terrain = [(width * i / chunks, heights[i]) for i in range(chunks + 1)]
    return tuple(base64.b64encode(_lander_frame(rng, terrain, t, frames)).decode("ascii") for t in range(frames))


def _frames_profile(seed: int, environment: str | None) -> tuple[bytes, Iterator[bytes]]:
    pool = frame_pool(seed)

    def steps() -> Iterator[bytes]:
        for i, agent_step in enumerate(_lander_agent_steps(seed)):
            step = {"number": i, "image": pool[i % len(pool)], "agent_steps": [agent_step]}
            yield orjson.dumps(step, option=_NUMPY)

    return _lander_header(seed, environment), steps()


def _vector_profile(seed: int, environment: str | None) -> tuple[bytes, Iterator[bytes]]:
    def steps() -> Iterator[bytes]:
        for i, agent_step in enumerate(_lander_agent_steps(seed)):
            yield orjson.dumps({"number": i, "agent_steps": [agent_step]}, option=_NUMPY)

    return _lander_header(seed, environment), steps()


def _sparse_frames_profile(seed: int, environment: str | None) -> tuple[bytes, Iterator[bytes]]:
    """The lander, rendered on every :data:`SPARSE_EVERY`-th step only (a video at a lower rate than the
    environment's): 96x72 PNGs among steps without a frame."""
    pool = small_frame_pool(seed, 20, (96, 72))

    def steps() -> Iterator[bytes]:
        for i, agent_step in enumerate(_lander_agent_steps(seed)):
            step: dict[str, Any] = {"number": i, "agent_steps": [agent_step]}
            if i % SPARSE_EVERY == 0:
                step["image"] = pool[(i // SPARSE_EVERY) % len(pool)]
            yield orjson.dumps(step, option=_NUMPY)

    return _lander_header(seed, environment), steps()


SPARSE_EVERY = 20
SWARM_AGENTS = 32


def _swarm_profile(seed: int, environment: str | None) -> tuple[bytes, Iterator[bytes]]:
    """:data:`SWARM_AGENTS` agents a step (a drone swarm), each with 4 short decimals, an action
    distribution, health and a value estimate: many small agent rows with the optional columns."""
    training = {"environment": environment or "Swarm-v0", "algorithm": "MAPPO", "parallel": True, "num_gpus": 0.0,
                "iterations": 500_000, "config": {"lr": 0.0007, "agents": SWARM_AGENTS}}
    header = _header({"0": "hover", "1": "advance"}, training, {"seed": seed})
    names = [f"drone_{k:02d}" for k in range(SWARM_AGENTS)]

    def steps() -> Iterator[bytes]:
        rng = np.random.default_rng([seed, 9])
        for start in count(0, BLOCK):
            obs = np.round(rng.standard_normal((BLOCK, SWARM_AGENTS, 4)), 3)
            advance = np.round(rng.random((BLOCK, SWARM_AGENTS)), 3)
            rewards = np.round(rng.standard_normal((BLOCK, SWARM_AGENTS)) * 0.1, 3).tolist()
            health = np.round(rng.random((BLOCK, SWARM_AGENTS)) * 100, 1).tolist()
            values = np.round(rng.standard_normal((BLOCK, SWARM_AGENTS)), 3).tolist()
            for j in range(BLOCK):
                agent_steps = [
                    {"agent": name, "action": int(advance[j, a] > 0.5), "reward": rewards[j][a],
                     "observation_space": obs[j, a],
                     "action_distribution": [round(1 - advance[j, a], 3), advance[j, a]],
                     "health": health[j][a], "value_estimate": values[j][a]}
                    for a, name in enumerate(names)
                ]
                yield orjson.dumps({"number": start + j, "agent_steps": agent_steps}, option=_NUMPY)

    return header, steps()


# -- teams: two teams of units ---------------------------------------------------------------------

TEAMS = ("team_red", "team_blue")
MAX_UNITS = 10
TEAM_ACTIONS = 10
UNIT_NAMES = {
    "team_red": [f"{kind}_{i}" for kind, n in (("stalker", 3), ("zealot", 5), ("colossus", 2)) for i in range(n)],
    "team_blue": [f"{kind}_{i}" for kind, n in (("marine", 6), ("marauder", 3), ("medivac", 1)) for i in range(n)],
}
UNIT_MAX_HEALTH = 45.0
EPISODE_LENGTH = 300  # the battle restarts with full teams this often


def _softmax32(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32).astype(np.float64)


def _teams_profile(seed: int, environment: str | None) -> tuple[bytes, Iterator[bytes]]:
    names = ["no_op", "stop", "move_north", "move_south", "move_east", "move_west",
             "attack_0", "attack_1", "attack_2", "attack_3"]
    action_mapping: dict[str, Any] = {str(i): name for i, name in enumerate(names)}
    action_mapping["unit_mapping"] = {str(i): name for i, name in enumerate(names)}
    training = {
        "environment": environment or "SMAC/3s5z_vs_6m",
        "algorithm": "QMIX",
        "parallel": True,
        "num_gpus": 1.0,
        "iterations": 2_000_000,
        "config": {"lr": 0.0005, "gamma": 0.99, "batch_size": 32, "buffer_size": 5000,
                   "mixer": "qmix", "mixing_embed_dim": 32, "epsilon": {"start": 1.0, "finish": 0.05}},
        "reward_mapping": ["damage_dealt", "enemy_killed", "win_bonus"],
    }
    header = _header(action_mapping, training, {"deterministic": False, "map": "3s5z_vs_6m", "seed": seed})
    return header, _teams_steps(seed)


def _teams_steps(seed: int) -> Iterator[bytes]:
    rng = np.random.default_rng([seed, 2])
    shape = (BLOCK, 2, 1 + MAX_UNITS)  # per step, team, [team, unit 0..9]
    for start in count(0, BLOCK):
        obs = np.abs(_float32s(rng, (BLOCK, 2, 8, 8), scale=0.5))
        dist = _softmax32(rng.standard_normal((*shape, TEAM_ACTIONS), dtype=np.float32) * 2)
        values = _float32s(rng, shape, scale=2.0, shift=4.0)
        rewards = np.round(np.abs(rng.standard_normal((*shape, 3))) * [2.0, 0.3, 0.0], 3)
        predicted = np.round(rewards.sum(axis=-1) + rng.standard_normal(shape) * 0.1, 4).tolist()
        actions = rng.integers(0, TEAM_ACTIONS, shape).tolist()
        health = np.round(rng.uniform(0.1, 1.0, (BLOCK, 2, MAX_UNITS)) * UNIT_MAX_HEALTH, 1)
        jitter = rng.integers(-1, 2, (BLOCK, 2)).tolist()
        metrics = np.round(rng.random((BLOCK, TEAM_ACTIONS)) * 10, 3).tolist()
        for j in range(BLOCK):
            i = start + j
            if i % EPISODE_LENGTH == EPISODE_LENGTH - 1:
                rewards[j, :, 0, 2] = (10.0, 0.0)  # red wins each battle
            alive = [max(3, min(MAX_UNITS, MAX_UNITS - (i % EPISODE_LENGTH) * 7 // EPISODE_LENGTH + jitter[j][t]))
                     for t in range(2)]
            unit_health = [health[j, t, : alive[t]] for t in range(2)]
            agent_steps = []
            for t, team in enumerate(TEAMS):
                units = []
                for u in range(alive[t]):
                    unit: dict[str, Any] = {
                        "unit": UNIT_NAMES[team][u], "action": actions[j][t][u + 1], "rewards": rewards[j, t, u + 1],
                        "health": float(unit_health[t][u]), "value_estimate": values[j, t, u + 1],
                        "predicted_reward": predicted[j][t][u + 1], "action_distribution": dist[j, t, u + 1],
                    }
                    if u == 0 and i % 250 == 0:
                        unit["custom_metrics"] = {"Damage dealt": {"y": metrics[j][:3], "y_label": "hp"}}
                    units.append(unit)
                other = 1 - t
                agent: dict[str, Any] = {
                    "agent": team, "action": actions[j][t][0], "rewards": rewards[j, t, 0],
                    "observation_space": obs[j, t], "action_distribution": dist[j, t, 0],
                    "health": round(float(unit_health[t].sum()), 1), "value_estimate": values[j, t, 0],
                    "predicted_reward": predicted[j][t][0],
                    "enemy_agent_health": [round(float(unit_health[other].sum()), 1)],
                    "enemy_unit_health": unit_health[other],
                    "unit_steps": units,
                }
                if i % 100 == 0:
                    agent["custom_metrics"] = {
                        "Win rate": {"x": [i], "y": [round(0.5 + 0.4 * math.tanh(i / 50_000), 4)],
                                     "x_label": "step", "y_label": "win rate"},
                        "Q values": {"x": list(range(TEAM_ACTIONS)), "y": metrics[j],
                                     "x_label": "action", "y_label": "Q"},
                    }
                agent_steps.append(agent)
            yield orjson.dumps({"number": i, "agent_steps": agent_steps}, option=_NUMPY)


# -- pixels: Breakout after Atari preprocessing ------------------------------------------------------

BREAKOUT_ACTIONS = {"0": "NOOP", "1": "FIRE", "2": "RIGHT", "3": "LEFT"}
SCREEN = 84
_BRICK_ROWS = (slice(21, 23), slice(23, 25), slice(25, 27), slice(27, 29), slice(29, 31), slice(31, 33))
_BRICK_SHADES = (111, 104, 100, 93, 88, 74)  # grayscale of Breakout's six brick colours
_BRICK_POINTS = (7, 7, 4, 4, 1, 1)
_BRICKS_PER_ROW = 19
_WALL = 142


def _pixels_profile(seed: int, environment: str | None) -> tuple[bytes, Iterator[bytes]]:
    training = {
        "environment": environment or "ALE/Breakout-v5",
        "algorithm": "DQN",
        "parallel": False,
        "num_gpus": 1.0,
        "iterations": 10_000_000,
        "config": {"frame_skip": 4, "screen_size": SCREEN, "grayscale_obs": True, "frame_stack": 1,
                   "buffer_size": 100_000, "learning_rate": 0.0001, "target_update_interval": 1000},
    }
    header = _header(BREAKOUT_ACTIONS, training, {"deterministic": True, "repeat_action_probability": 0.25})
    return header, _pixels_steps(seed)


def _pixels_steps(seed: int) -> Iterator[bytes]:
    rng = np.random.default_rng([seed, 3])
    walls = np.zeros((SCREEN, SCREEN), np.uint8)
    walls[14:17, :] = _WALL
    walls[14:, :3] = _WALL
    walls[14:, -3:] = _WALL
    walls[2:9, 20:26] = walls[2:9, 60:66] = 120  # score digits
    bricks = np.ones((len(_BRICK_ROWS), _BRICKS_PER_ROW), bool)
    screen = walls.copy()
    dirty = True
    ball_x, ball_y, dx, dy = 40.0, 50.0, 1.7, 2.3
    paddle = 40
    for start in count(0, BLOCK):
        actions = rng.integers(0, 4, BLOCK).tolist()
        hits = rng.random(BLOCK).tolist()
        for j in range(BLOCK):
            i = start + j
            reward = 0
            if hits[j] < 0.02 and bricks.any():
                rows, cols = np.nonzero(bricks)
                k = int(rng.integers(len(rows)))
                bricks[rows[k], cols[k]] = False
                reward, dirty = _BRICK_POINTS[rows[k]], True
            if not bricks.any() or i % 5000 == 0:
                bricks[:] = True
                dirty = True
            if dirty:
                screen = walls.copy()
                for row, shade, line in zip(_BRICK_ROWS, _BRICK_SHADES, bricks, strict=True):
                    screen[row, 3 : 3 + 4 * _BRICKS_PER_ROW] = np.repeat(line * shade, 4).astype(np.uint8)
                dirty = False
            ball_x, dx = _bounce(ball_x + dx, dx, 4, SCREEN - 6)
            ball_y, dy = _bounce(ball_y + dy, dy, 34, 78)
            paddle = max(3, min(SCREEN - 11, paddle + (1 if ball_x > paddle + 4 else -1) * 2))
            obs = screen.copy()
            obs[79:81, paddle : paddle + 8] = _WALL
            by, bx = int(ball_y), int(ball_x)
            obs[by : by + 2, bx : bx + 2] = _WALL
            agent_step = {"agent": "player", "action": actions[j], "reward": reward, "observation_space": obs}
            yield orjson.dumps({"number": i, "agent_steps": [agent_step]}, option=_NUMPY)


def _bounce(position: float, velocity: float, low: float, high: float) -> tuple[float, float]:
    if position < low:
        return 2 * low - position, -velocity
    if position > high:
        return 2 * high - position, -velocity
    return position, velocity


# -- issue 15: the shapes users have beyond the three above -----------------------------------------
#
# teams_metrics / teams_plain / teams_nounits: the teams battle with short decimals (3 places, as
# most loggers round), custom metrics on every agent step and on each team's first unit every 10
# steps (teams_metrics), none (teams_plain), or no unit steps at all (teams_nounits, with the
# metrics); long_floats: one agent with an 84x84 observation of float64 values written in full
# (~140 KB a step); frames64: the lander with a 64x64 PNG on every step (~2.6 KB a step); frames_jpeg:
# with an 84x84 JPEG (quality 90) instead, as a camera or a video's frames are stored (~2.9 KB a step);
# random: shapes drawn from the seed (agents, observation shape and number style, reward kind,
# units, metrics, frames), so that other seeds give other files.
#
# sparse_frames: the lander rendered on every 20th step only, a 96x72 PNG among steps without a frame;
# swarm: 32 agents a step with the optional columns (action distribution, health, value estimate).


def _teams_variant(metrics: bool, units: bool) -> Any:
    def profile(seed: int, environment: str | None) -> tuple[bytes, Iterator[bytes]]:
        header, _ = _teams_profile(seed, environment)
        return header, _teams_variant_steps(seed, metrics=metrics, units=units)

    return profile


def _teams_variant_steps(seed: int, *, metrics: bool, units: bool) -> Iterator[bytes]:
    rng = np.random.default_rng([seed, 4])
    shape = (BLOCK, 2, 1 + MAX_UNITS)
    for start in count(0, BLOCK):
        obs = np.round(np.abs(rng.standard_normal((BLOCK, 2, 8, 8))) * 0.5, 3)
        dist = np.round(_softmax32(rng.standard_normal((*shape, TEAM_ACTIONS), dtype=np.float32) * 2), 3)
        values = np.round(rng.standard_normal(shape) * 2.0 + 4.0, 3).tolist()
        rewards = np.round(np.abs(rng.standard_normal((*shape, 3))) * [2.0, 0.3, 0.0], 3)
        predicted = np.round(rewards.sum(axis=-1) + rng.standard_normal(shape) * 0.1, 3).tolist()
        actions = rng.integers(0, TEAM_ACTIONS, shape).tolist()
        health = np.round(rng.uniform(0.1, 1.0, (BLOCK, 2, MAX_UNITS)) * UNIT_MAX_HEALTH, 1)
        jitter = rng.integers(-1, 2, (BLOCK, 2)).tolist()
        q = np.round(rng.standard_normal((BLOCK, 2, TEAM_ACTIONS)), 3).tolist()
        for j in range(BLOCK):
            i = start + j
            if i % EPISODE_LENGTH == EPISODE_LENGTH - 1:
                rewards[j, :, 0, 2] = (10.0, 0.0)
            alive = [max(3, min(MAX_UNITS, MAX_UNITS - (i % EPISODE_LENGTH) * 7 // EPISODE_LENGTH + jitter[j][t]))
                     for t in range(2)]
            unit_health = [health[j, t, : alive[t]] for t in range(2)]
            agent_steps = []
            for t, team in enumerate(TEAMS):
                agent: dict[str, Any] = {
                    "agent": team, "action": actions[j][t][0], "rewards": rewards[j, t, 0],
                    "observation_space": obs[j, t], "action_distribution": dist[j, t, 0],
                    "health": round(float(unit_health[t].sum()), 1), "value_estimate": values[j][t][0],
                    "predicted_reward": predicted[j][t][0],
                    "enemy_agent_health": [round(float(unit_health[1 - t].sum()), 1)],
                    "enemy_unit_health": unit_health[1 - t],
                }
                if metrics:
                    agent["custom_metrics"] = {"Q values": {"y": q[j][t], "y_label": "Q"},
                                               "alive": {"y": [alive[t]], "y_label": "units"}}
                if units:
                    unit_steps = []
                    for u in range(alive[t]):
                        unit: dict[str, Any] = {
                            "unit": UNIT_NAMES[team][u], "action": actions[j][t][u + 1],
                            "rewards": rewards[j, t, u + 1], "health": float(unit_health[t][u]),
                            "value_estimate": values[j][t][u + 1], "predicted_reward": predicted[j][t][u + 1],
                            "action_distribution": dist[j, t, u + 1],
                        }
                        if metrics and u == 0 and i % 10 == 0:
                            unit["custom_metrics"] = {"Damage dealt": {"y": q[j][t][:3], "y_label": "hp"}}
                        unit_steps.append(unit)
                    agent["unit_steps"] = unit_steps
                agent_steps.append(agent)
            yield orjson.dumps({"number": i, "agent_steps": agent_steps}, option=_NUMPY)


def _long_floats_profile(seed: int, environment: str | None) -> tuple[bytes, Iterator[bytes]]:
    training = {
        "environment": environment or "ALE/Breakout-v5",
        "algorithm": "DQN",
        "parallel": False,
        "num_gpus": 1.0,
        "iterations": 10_000_000,
        "config": {"frame_skip": 4, "screen_size": SCREEN, "grayscale_obs": True, "normalize_obs": True},
    }
    header = _header(BREAKOUT_ACTIONS, training, {"deterministic": True})

    def steps() -> Iterator[bytes]:
        rng = np.random.default_rng([seed, 5])
        for i in count():
            # float64 screens after a normalisation, printed in full (~19 characters a value)
            obs = rng.random((SCREEN, SCREEN)) * 0.9 + 0.05
            agent_step = {"agent": "player", "action": int(rng.integers(0, 4)),
                          "reward": float(rng.random() < 0.02), "observation_space": obs}
            yield orjson.dumps({"number": i, "agent_steps": [agent_step]}, option=_NUMPY)

    return header, steps()


SMALL_FRAME = (64, 64)


@cache
def small_frame_pool(seed: int, frames: int = FRAME_POOL, size: tuple[int, int] = SMALL_FRAME,
                     image_format: str = "PNG") -> tuple[str, ...]:
    """``frames`` distinct base64 PNGs (or JPEGs, of quality 90) of ``size``: the lander scene scaled
    down, with a little noise."""
    rng = np.random.default_rng([seed, 6])
    out = []
    for text in frame_pool(seed, frames):
        with Image.open(io.BytesIO(base64.b64decode(text))) as big:
            small = np.asarray(big.convert("RGB").resize(size, Image.Resampling.BILINEAR), np.int16)
        speckle = rng.random(small.shape[:2]) < 0.05  # sensor noise on 5% of the pixels: ~1.8 KB at 64x64
        noisy = np.clip(small + speckle[..., None] * rng.integers(-8, 9, small.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        options = {"quality": 90} if image_format == "JPEG" else {}
        Image.fromarray(noisy, "RGB").save(buffer, format=image_format, **options)
        out.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return tuple(out)


def _frames64_profile(seed: int, environment: str | None, *, size: tuple[int, int] = SMALL_FRAME,
                      image_format: str = "PNG") -> tuple[bytes, Iterator[bytes]]:
    pool = small_frame_pool(seed, size=size, image_format=image_format)

    def steps() -> Iterator[bytes]:
        for i, agent_step in enumerate(_lander_agent_steps(seed)):
            yield orjson.dumps({"number": i, "image": pool[i % len(pool)], "agent_steps": [agent_step]},
                               option=_NUMPY)

    return _lander_header(seed, environment), steps()


@dataclass(frozen=True)
class RandomShape:
    """The shape of a ``random`` profile file, drawn from its seed (see :func:`random_shape`)."""

    agents: int
    observation: tuple[int, ...]  # (n,) or (rows, columns)
    numbers: str  # "pixels" (integers 0-255), "short" (3 decimals), "float32" (17 digits), "float64"
    reward_components: int  # 0: a scalar "reward"; else "rewards" of this length with reward_mapping
    units: int  # most unit steps per agent step (0: none)
    metrics: float  # share of agent steps with custom_metrics
    frame: tuple[int, int] | None  # a PNG of this size on every step, or none


def random_shape(seed: int) -> RandomShape:
    rng = random.Random(f"random-shape-{seed}")
    observation = ((rng.choice((2, 4, 8, 17, 64, 128, 512)),) if rng.random() < 0.6
                   else (rng.choice((4, 8, 16, 42)), rng.choice((4, 8, 16, 42))))
    return RandomShape(
        agents=rng.choice((1, 1, 2, 3, 5)),
        observation=observation,
        numbers=rng.choice(("pixels", "short", "float32", "float64")),
        reward_components=rng.choice((0, 0, 2, 4)),
        units=rng.choice((0, 0, 3, 8)),
        metrics=rng.choice((0.0, 0.0, 0.05, 1.0)),
        frame=rng.choice((None, None, None, (32, 32), (96, 72))),
    )


def _random_numbers(rng: np.random.Generator, style: str, shape: tuple[int, ...]) -> np.ndarray:
    if style == "pixels":
        return rng.integers(0, 256, shape, dtype=np.int64)
    if style == "short":
        return np.round(rng.standard_normal(shape), 3)
    if style == "float32":
        return _float32s(rng, shape)
    return rng.standard_normal(shape)


def _random_profile(seed: int, environment: str | None) -> tuple[bytes, Iterator[bytes]]:
    shape = random_shape(seed)
    components = shape.reward_components
    training: dict[str, Any] = {
        "environment": environment or f"Random-{seed}-v0", "algorithm": "PPO", "parallel": shape.agents > 1,
        "num_gpus": 0.0, "iterations": 100_000, "config": {"shape": str(shape)},
    }
    if components:
        training["reward_mapping"] = [f"component_{k}" for k in range(components)]
    header = _header({str(k): f"action_{k}" for k in range(6)}, training, {"seed": seed})
    frames = small_frame_pool(seed, 20, shape.frame) if shape.frame else None
    names = [f"agent_{k}" for k in range(shape.agents)]

    def steps() -> Iterator[bytes]:
        rng = np.random.default_rng([seed, 7])
        for start in count(0, BLOCK):
            obs = _random_numbers(rng, shape.numbers, (BLOCK, shape.agents, *shape.observation))
            actions = rng.integers(0, 6, (BLOCK, shape.agents, 1 + shape.units)).tolist()
            rewards = np.round(rng.standard_normal((BLOCK, shape.agents, 1 + shape.units, max(components, 1))), 4)
            unit_counts = rng.integers(1, shape.units + 1, (BLOCK, shape.agents)).tolist() if shape.units else None
            metric_draws = rng.random((BLOCK, shape.agents)).tolist()
            for j in range(BLOCK):
                i = start + j
                agent_steps = []
                for a, name in enumerate(names):
                    agent: dict[str, Any] = {"agent": name, "action": actions[j][a][0], "observation_space": obs[j, a]}
                    if components:
                        agent["rewards"] = rewards[j, a, 0]
                    else:
                        agent["reward"] = float(rewards[j, a, 0, 0])
                    if metric_draws[j][a] < shape.metrics:
                        agent["custom_metrics"] = {"entropy": {"y": [round(metric_draws[j][a], 4)]}}
                    if unit_counts is not None:
                        agent["unit_steps"] = [
                            {"unit": f"unit_{u}", "action": actions[j][a][u + 1],
                             **({"rewards": rewards[j, a, u + 1]} if components
                                else {"reward": float(rewards[j, a, u + 1, 0])})}
                            for u in range(unit_counts[j][a])
                        ]
                    agent_steps.append(agent)
                step: dict[str, Any] = {"number": i, "agent_steps": agent_steps}
                if frames:
                    step["image"] = frames[i % len(frames)]
                yield orjson.dumps(step, option=_NUMPY)

    return header, steps()


_PROFILE_BUILDERS = {
    "frames": _frames_profile,
    "teams": _teams_profile,
    "pixels": _pixels_profile,
    "vector": _vector_profile,
    "teams_metrics": _teams_variant(metrics=True, units=True),
    "teams_plain": _teams_variant(metrics=False, units=True),
    "teams_nounits": _teams_variant(metrics=True, units=False),
    "long_floats": _long_floats_profile,
    "frames64": _frames64_profile,
    "frames_jpeg": functools.partial(_frames64_profile, size=(84, 84), image_format="JPEG"),
    "random": _random_profile,
    "sparse_frames": _sparse_frames_profile,
    "swarm": _swarm_profile,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=ALL_PROFILES, required=True)
    parser.add_argument("--size", type=parse_size, help="target size: 200KB, 100MB, 1GB (decimal) or 64MiB")
    parser.add_argument("--steps", type=int, help="write exactly this many steps instead of a size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--environment", help="override the profile's training.environment")
    parser.add_argument("-o", "--output", required=True, help="file to write ('-' for standard output)")
    args = parser.parse_args(argv)
    if args.size is None and args.steps is None:
        parser.error("give --size or --steps")
    started = time.perf_counter()
    kwargs = {"size": args.size, "steps": args.steps, "seed": args.seed, "environment": args.environment}
    if args.output == "-":
        written = write_episode(sys.stdout.buffer, args.profile, **kwargs)
    else:
        written = generate_file(args.output, args.profile, **kwargs)
    seconds = time.perf_counter() - started
    print(f"{args.output}: {args.profile}, {written.steps} steps, {written.bytes} bytes in {seconds:.1f} s "
          f"({written.bytes / 1e6 / seconds:.0f} MB/s)", file=sys.stderr)


if __name__ == "__main__":
    main()
