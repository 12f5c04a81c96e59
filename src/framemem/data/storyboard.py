"""Storyboards: timestamped prompts, in YAML or JSON.

    # story.yaml                            // story.json
    prompts:                                {"prompts": [
      - at: 0                                  {"at": 0, "prompt": "a ginger cat, the camera pans right"},
        prompt: a ginger cat, the camera pans right
      - at: 6.5                                {"at": 6.5, "prompt": "a brick wall"}]}
        prompt: a brick wall

`at` is the time in seconds (of the whole video, the init video included) from which the
prompt holds. Times must be ≥ 0 and strictly increasing; prompts non-empty; no other keys.
A section is conditioned on the prompt active at its middle (the paper's "prompt with the
nearest timestamp": the latest one not after it).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import FrameMemError

TOP_KEYS = {"prompts"}
ENTRY_KEYS = {"at", "prompt"}


@dataclass(frozen=True)
class Storyboard:
    times: tuple[float, ...]
    prompts: tuple[str, ...]

    @classmethod
    def from_dict(cls, data, source: str = "storyboard") -> "Storyboard":
        if not isinstance(data, dict) or set(data) - TOP_KEYS or "prompts" not in data:
            keys = sorted(map(str, set(data) - TOP_KEYS)) if isinstance(data, dict) else []
            raise FrameMemError(f"{source}: expected a mapping with one key 'prompts'" + (f" (unknown: {', '.join(keys)})" if keys else ""))
        entries = data["prompts"]
        if not isinstance(entries, list) or not entries:
            raise FrameMemError(f"{source}: 'prompts' must be a non-empty list of {{at, prompt}} entries")
        times, prompts = [], []
        for n, entry in enumerate(entries, 1):
            where = f"{source}: prompt {n}"
            if not isinstance(entry, dict):
                raise FrameMemError(f"{where}: expected a mapping with 'at' and 'prompt'")
            unknown = set(entry) - ENTRY_KEYS
            if unknown:
                raise FrameMemError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} (allowed: at, prompt)")
            if set(entry) != ENTRY_KEYS:
                raise FrameMemError(f"{where}: needs both 'at' (seconds) and 'prompt'")
            at, prompt = entry["at"], entry["prompt"]
            if isinstance(at, bool) or not isinstance(at, (int, float)):
                raise FrameMemError(f"{where}: 'at' must be a number of seconds, not {at!r}")
            if not math.isfinite(at) or at < 0:
                raise FrameMemError(f"{where}: 'at' must be a finite, non-negative number of seconds, not {at}")
            if times and at <= times[-1]:
                raise FrameMemError(f"{where}: times must increase ({at} comes after {times[-1]})")
            if not isinstance(prompt, str):  # YAML reads `prompt: 42` as a number
                raise FrameMemError(f"{where}: 'prompt' must be text, not {prompt!r} (quote it in YAML)")
            if not prompt.strip():
                raise FrameMemError(f"{where}: empty prompt")
            times.append(float(at))
            prompts.append(prompt.strip())
        return cls(tuple(times), tuple(prompts))

    @classmethod
    def load(cls, path: str | Path) -> "Storyboard":
        path = Path(path)
        if not path.is_file():
            raise FrameMemError(f"{path}: no such storyboard file")
        try:
            text = path.read_text(encoding="utf-8")
            if path.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except UnicodeDecodeError:
            raise FrameMemError(f"{path}: not a UTF-8 text file") from None
        except (json.JSONDecodeError, ValueError) as err:
            raise FrameMemError(f"{path}: not valid JSON ({err})") from None
        except Exception as err:  # yaml.YAMLError and its subclasses
            first = str(err).strip().splitlines()[0]
            raise FrameMemError(f"{path}: not valid YAML ({first})") from None
        return cls.from_dict(data, str(path))

    def prompt_at(self, seconds: float) -> str:
        """The prompt holding at `seconds` (the first one before the first time)."""
        active = [p for t, p in zip(self.times, self.prompts) if t <= seconds + 1e-9]
        return active[-1] if active else self.prompts[0]

    def to_dict(self) -> dict:
        return {"prompts": [{"at": t, "prompt": p} for t, p in zip(self.times, self.prompts)]}
