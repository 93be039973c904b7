"""Build the Lambda code bundle on the synth machine — no Docker.

The bundle is one directory shared by the three functions::

    buquet/ obstore/ boto3/ aws_lambda_powertools/ ...   site-packages for the target
    lambdas/                                             the handlers (this repo)
    <your app>/                                          buquet:appPath, if given

Third-party packages are installed with ``pip install --target`` for the Lambda
platform, not the build machine's: ``--platform manylinux_2_17…2_34_<arch>`` (the
Python 3.12+ runtimes run on Amazon Linux 2023, glibc 2.34), ``--implementation cp
--python-version 3.12 --only-binary=:all:``. pip then picks the published manylinux
wheels of native packages (obstore ships them for x86_64 and aarch64), so neither
Docker nor a cross compiler is needed, and the same bundle builds on macOS, Windows or
Linux of either architecture. buquet itself is pure Python: a copy of its sources
(``pyproject.toml``, ``README.md``, ``buquet/``) is installed from a staging directory,
so the repository is left untouched.

Builds are cached under ``$BUQUET_BUNDLE_CACHE`` (default ``~/.cache/buquet/lambda-bundles``)
by a SHA-256 of everything that goes in: the buquet and handler sources, the app
directory, requirement files, architecture, Python version and platform tags. A synth
whose inputs did not change reuses the directory at once; the four most recent bundles
of each architecture are kept. Delete the cache to pick up newer releases of unpinned
dependencies (or pin them in your app's ``requirements.txt``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON_VERSION = "3.12"
#: Amazon Linux 2023 (python3.12+ runtimes) has glibc 2.34
GLIBC_MINOR_MAX = 34
#: installed next to buquet in every bundle
HANDLER_REQUIREMENTS = ("aws-lambda-powertools>=3.0,<4",)
_COMPLETE = ".buquet-bundle-complete"
_SKIP_DIRS = {"__pycache__", ".git", ".venv", "venv", "node_modules", "cdk.out", ".pytest_cache", ".mypy_cache", ".hypothesis", ".buquet-data"}
_BUNDLE_FORMAT = "2"  # bump to invalidate every cached bundle
#: bundles kept per architecture (the least recently built beyond this are deleted)
KEEP_PER_ARCHITECTURE = 4


@dataclass(frozen=True)
class Bundle:
    """A built code directory.

    Attributes:
        path: the directory to hand to ``lambda.Code.from_asset``.
        digest: SHA-256 of the inputs (use it as the asset hash).
        built: ``True`` if this call built it, ``False`` if it came from the cache.
        seconds: build time (0 for a cache hit).
    """

    path: Path
    digest: str
    built: bool
    seconds: float


def platform_tags(architecture: str) -> list[str]:
    """pip ``--platform`` values accepted on Lambda for ``arm64``/``x86_64``.

    pip (at least up to 24.x) does not expand ``manylinux_2_34_x`` to the older
    ``manylinux_2_17``… tags, so every tag is listed.
    """
    machine = {"arm64": "aarch64", "x86_64": "x86_64"}[architecture]
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(GLIBC_MINOR_MAX, 16, -1)]
    tags.append(f"manylinux2014_{machine}")
    if machine == "x86_64":
        tags += ["manylinux2010_x86_64", "manylinux1_x86_64"]
    return tags


def cache_root() -> Path:
    """Where built bundles are kept (``$BUQUET_BUNDLE_CACHE`` or ``~/.cache/...``)."""
    env = os.environ.get("BUQUET_BUNDLE_CACHE")
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "buquet" / "lambda-bundles"


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            if not name.endswith((".pyc", ".pyo")):
                out.append(Path(dirpath) / name)
    return out


def _requirements_file(app_path: Path | None) -> Path | None:
    if app_path is None:
        return None
    candidate = (app_path if app_path.is_dir() else app_path.parent) / "requirements.txt"
    return candidate if candidate.is_file() else None


def _buquet_sources() -> list[Path]:
    return [REPO / "pyproject.toml", REPO / "README.md", REPO / "buquet"]


def input_digest(app_path: Path | None, architecture: str) -> str:
    """SHA-256 over every input of the bundle (file names and contents, settings)."""
    h = hashlib.sha256()
    h.update(f"format={_BUNDLE_FORMAT}\0arch={architecture}\0py={PYTHON_VERSION}\0".encode())
    h.update(("\0".join(platform_tags(architecture)) + "\0" + "\0".join(HANDLER_REQUIREMENTS)).encode())
    roots: list[tuple[str, Path]] = [("buquet", p) for p in _buquet_sources()] + [("lambdas", REPO / "lambdas")]
    if app_path is not None:
        roots.append(("app", app_path))
    req = _requirements_file(app_path)
    if req is not None:
        roots.append(("requirements", req))
    for label, root in roots:
        for f in _files(root):
            rel = f.relative_to(root.parent).as_posix()
            h.update(f"{label}:{rel}\0".encode())
            h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _copy(src: Path, dest_dir: Path) -> None:
    """Copy a file or a directory (by its own name) into ``dest_dir``, without caches."""
    target = dest_dir / src.name
    if src.is_file():
        shutil.copy2(src, target)
        return
    shutil.copytree(
        src, target,
        ignore=lambda d, names: [n for n in names if n in _SKIP_DIRS or n.endswith((".pyc", ".pyo", ".egg-info"))],
    )


def _pip_install(target: Path, architecture: str, args: list[str]) -> None:
    cmd = [
        sys.executable, "-m", "pip", "install",
        "--target", str(target),
        "--implementation", "cp",
        "--python-version", PYTHON_VERSION,
        "--only-binary=:all:",
        "--no-compile",
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
    ]
    for tag in platform_tags(architecture):
        cmd += ["--platform", tag]
    cmd += args
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"building the Lambda bundle for {architecture} failed (pip exit {result.returncode}):\n"
            f"$ {' '.join(cmd)}\n{result.stdout[-4000:]}{result.stderr[-4000:]}"
        )


def _strip(site: Path) -> None:
    """Drop what the runtime never loads: console scripts and bytecode caches."""
    shutil.rmtree(site / "bin", ignore_errors=True)
    for cache in list(site.rglob("__pycache__")):
        shutil.rmtree(cache, ignore_errors=True)


def build(app_path: Path | None, architecture: str, *, cache: Path | None = None, log: bool = True) -> Bundle:
    """Build (or reuse) the bundle for ``architecture`` with the app at ``app_path``.

    Args:
        app_path: the user's package directory or ``.py`` file, or ``None``.
        architecture: ``"arm64"`` or ``"x86_64"``.
        cache: the cache root (default :func:`cache_root`).
        log: print a one-line summary to stderr (the CDK CLI shows it).

    Returns:
        The :class:`Bundle`.

    Raises:
        RuntimeError: pip failed (no wheel for the platform, no network, ...); the
            message has pip's output.
    """
    digest = input_digest(app_path, architecture)
    root = cache or cache_root()
    final = root / f"{architecture}-{digest[:32]}"
    if (final / _COMPLETE).exists():
        return Bundle(final, digest, False, 0.0)
    started = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".build-{architecture}-", dir=root))
    try:
        staging = work / "src"
        staging.mkdir()
        for src in _buquet_sources():
            _copy(src, staging)
        out = work / "out"
        args = [str(staging), *HANDLER_REQUIREMENTS]
        req = _requirements_file(app_path)
        if req is not None:
            args += ["-r", str(req)]
        _pip_install(out, architecture, args)
        _copy(REPO / "lambdas", out)
        if app_path is not None:
            _copy(app_path, out)
        _strip(out)
        (out / _COMPLETE).write_text(digest + "\n")
        try:
            os.replace(out, final)
        except OSError:
            if not (final / _COMPLETE).exists():  # not a concurrent build that won the race
                shutil.rmtree(final, ignore_errors=True)
                os.replace(out, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _evict(root, architecture, keep=final)
    seconds = time.monotonic() - started
    if log:
        print(
            f"[buquet] built the {architecture} Lambda bundle in {seconds:.1f} s "
            f"({directory_size(final) / 1e6:.1f} MB unzipped): {final}",
            file=sys.stderr,
        )
    return Bundle(final, digest, True, seconds)


def _evict(root: Path, architecture: str, keep: Path) -> None:
    """Delete all but the :data:`KEEP_PER_ARCHITECTURE` newest bundles of one architecture."""
    bundles = sorted(
        (p for p in root.glob(f"{architecture}-*") if (p / _COMPLETE).exists() and p != keep),
        key=lambda p: (p / _COMPLETE).stat().st_mtime,
        reverse=True,
    )
    for old in bundles[KEEP_PER_ARCHITECTURE - 1 :]:
        shutil.rmtree(old, ignore_errors=True)


def placeholder(cache: Path | None = None) -> Bundle:
    """A tiny code directory (the handlers only, no dependencies) for template tests
    (``-c buquet:bundle=false``). Functions deployed from it cannot run."""
    h = hashlib.sha256(b"buquet-placeholder\0")
    for f in _files(REPO / "lambdas"):
        h.update(f.relative_to(REPO).as_posix().encode() + b"\0" + f.read_bytes())
    digest = h.hexdigest()
    root = cache or cache_root()
    final = root / f"placeholder-{digest[:32]}"
    if not (final / _COMPLETE).exists():
        root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".build-placeholder-", dir=root))
        try:
            out = work / "out"
            out.mkdir()
            _copy(REPO / "lambdas", out)
            (out / "PLACEHOLDER.txt").write_text(
                "Synthesized with -c buquet:bundle=false: no dependencies bundled; do not deploy.\n"
            )
            (out / _COMPLETE).write_text(digest + "\n")
            try:
                os.replace(out, final)
            except OSError:
                pass  # a concurrent synth made it
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return Bundle(final, digest, False, 0.0)


def directory_size(path: Path) -> int:
    """Total size in bytes of the regular files under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


__all__ = ["Bundle", "build", "cache_root", "directory_size", "input_digest", "placeholder", "platform_tags"]
