"""Write examples/lunar_lander.json: a small, deterministic episode using every optional field.

Run ``python examples/make_example.py`` to regenerate it; the output is committed so that
``make run`` works without running this.
"""

from __future__ import annotations

import base64
import io
import json
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw

STEPS = 60
ACTIONS = {"0": "Do nothing", "1": "Fire left engine", "2": "Fire main engine", "3": "Fire right engine"}


def frame(t: int) -> str:
    """A 60x40 PNG of the lander at step t, base64-encoded."""
    image = Image.new("RGB", (60, 40), (10, 10, 30))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 36, 59, 39), fill=(120, 120, 120))
    x, y = 30 + int(8 * math.sin(t / 9)), 4 + t // 2
    draw.rectangle((x - 3, y, x + 3, y + 4), fill=(220, 220, 240))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode()


def main() -> None:
    rng = random.Random(7)
    steps = []
    for t in range(STEPS):
        action = rng.randrange(4)
        components = [round(rng.uniform(-1, 1), 4), round(-0.3 * (action == 2), 4), round(rng.uniform(0, 0.1), 4)]
        agent = {
            "agent": "lander",
            "action": action,
            "rewards": components,
            "observation_space": [round(rng.uniform(-1, 1), 5) for _ in range(8)],
            "action_distribution": [0.1, 0.2, 0.6, 0.1],
            "health": 100 - t,
            "value_estimate": round(rng.uniform(0, 50), 3),
            "predicted_reward": round(sum(components), 4),
        }
        if t % 20 == 0:
            agent["custom_metrics"] = {"Fuel": {"x": [t], "y": [1 - t / STEPS], "x_label": "step", "y_label": "fuel"}}
        steps.append({"number": t, "image": frame(t) if t % 5 == 0 else None, "agent_steps": [agent]})
    episode = {
        "action_mapping": ACTIONS,
        "training": {
            "environment": "LunarLander-v3",
            "algorithm": "PPO",
            "parallel": False,
            "num_gpus": 0.0,
            "iterations": 100000,
            "config": {"learning_rate": 0.0003, "n_steps": 2048, "gamma": 0.99},
            "reward_mapping": ["Shaping", "Main engine", "Leg contact"],
        },
        "inference": {"parallel": False, "config": {"deterministic": True}, "steps": steps},
    }
    out = Path(__file__).with_name("lunar_lander.json")
    out.write_text(json.dumps(episode, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
