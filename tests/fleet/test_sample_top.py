"""bench-scale's "where the time goes": py-spy's collapsed stacks, blocking calls counted apart."""

from __future__ import annotations

from pathlib import Path

from provisioner.lab.fleet.harness import SAMPLE_RATE, top_self


def test_running_functions_ranked_and_blocking_calls_set_apart(tmp_path: Path) -> None:
    src = tmp_path / "work.py"
    lines = ["os.fsync(fd)", "cond.wait(0.2)", "total = sum(parts)", "sock.recv(4096)", "d = h.update(b)"]
    src.write_text("\n".join(lines) + "\n")
    stacks = [
        (f"main ({src}:9);write ({src}:1)", 30),  # fsync
        (f"main ({src}:9);idle ({src}:2)", 500),  # a wait
        (f"main ({src}:9);add ({src}:3)", 20),
        (f"main ({src}:9);read ({src}:4)", 40),  # socket I/O
        (f"main ({src}:9);hash ({src}:5)", 10),
        (f"main ({src}:9);add ({src}:3)", 20),
    ]
    sample = tmp_path / "up.pyspy"
    sample.write_text("".join(f"{stack} {n}\n" for stack, n in stacks))
    top, blocked = top_self(sample, count=5)
    assert [name.split(" ")[0] for name, _, _ in top] == ["add", "hash"]
    assert top[0][1] == 40 / SAMPLE_RATE and abs(top[0][2] - 0.8) < 1e-9
    assert blocked == {"I/O": 40 / SAMPLE_RATE, "fsync": 30 / SAMPLE_RATE, "waits": 500 / SAMPLE_RATE}
