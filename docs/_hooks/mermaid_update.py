"""Refresh docs/javascripts/mermaid.min.js from the npm registry (`make docs-mermaid`).

Not an mkdocs hook: the site serves the committed file, so `make docs` needs neither npm nor a
CDN. This script fetches ``mermaid@<version>`` with ``npm pack``, checks its licence is MIT and
writes the bundle back with a licence header naming the exact version.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

TARGET = Path(__file__).resolve().parents[1] / "javascripts"
HEADER = (
    "/*! mermaid {version} (npm: mermaid@{version}, dist/mermaid.min.js) | MIT License | "
    "Copyright (c) 2014 - 2022 Knut Sveidqvist | https://github.com/mermaid-js/mermaid\n"
    " * Served with the site so that diagrams render offline (no CDN); "
    "`make docs-mermaid` refreshes it from npm. */\n"
)


def main(spec: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        packed = subprocess.run(
            ["npm", "pack", "--silent", f"mermaid@{spec}"],
            cwd=tmp,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[-1]
        with tarfile.open(Path(tmp) / packed) as archive:
            archive.extractall(tmp, filter="data")
        package = Path(tmp) / "package"
        meta = json.loads((package / "package.json").read_text(encoding="utf-8"))
        if meta.get("license") != "MIT":
            sys.exit(f"mermaid@{meta['version']} is licensed {meta.get('license')!r}, not MIT")
        bundle = (package / "dist" / "mermaid.min.js").read_text(encoding="utf-8")
        TARGET.mkdir(exist_ok=True)
        out = TARGET / "mermaid.min.js"
        out.write_text(HEADER.format(version=meta["version"]) + bundle, encoding="utf-8")
        shutil.copyfile(package / "LICENSE", TARGET / "mermaid.LICENSE")
        print(f"wrote {out} (mermaid {meta['version']}, {out.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "11")
