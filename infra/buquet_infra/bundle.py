"""Build the Lambda code bundle on the synth machine — no Docker.

The bundle is one directory shared by the functions::

    buquet/ obstore/ boto3/ aws_lambda_powertools/ ...   site-packages for the target
    lambdas/                                             the handlers (this repo)
    <your app>/                                          buquet:appPath, if given
    **/__pycache__/*.cpython-312.pyc                     bytecode for the runtime's Python

Third-party packages are installed with ``pip install --target`` for the Lambda
platform, not the build machine's: ``--platform manylinux_2_17…2_34_<arch>`` (the
Python 3.12+ runtimes run on Amazon Linux 2023, glibc 2.34), ``--implementation cp
--python-version <the function's Python> --only-binary=:all:``. pip then picks the
published manylinux wheels of native packages (obstore ships them for x86_64 and
aarch64), so neither Docker nor a cross compiler is needed, and the same bundle builds
on macOS, Windows or Linux of either architecture.

**Source-only dependencies.** A requirement published only as a source distribution
(``docopt==0.6.2``) has no wheel for pip to pick. When pip says so, the build makes the
wheel on this machine (``pip wheel --no-deps``) and retries with it on
``--find-links``: a pure-Python wheel (``py3-none-any``) runs anywhere and is bundled;
one with native code was built for *this* machine, not Lambda, and the build stops
with :class:`NativeSourceDependency`, which says what to do.

**Bytecode.** Lambda's code directory is read-only, so Python cannot cache the
bytecode it compiles at import: without ``.pyc`` files every cold start compiles every
imported module again. The bundle is therefore compiled with an interpreter of the
function's Python version (``$BUQUET_LAMBDA_PYTHON``, ``python3.X`` on ``PATH``,
pyenv's or uv's installs, or the synth interpreter itself when it matches) into
*unchecked-hash* ``.pyc`` files (PEP 552): valid whatever the files' timestamps (the
asset zip does not keep them) and never compared with the source again — the bundle is
immutable. ``precompile=None`` (auto) warns loudly and ships sources only when no such
interpreter exists; ``True`` makes that an error; ``False`` skips it.

buquet itself is pure Python: the imported ``buquet`` package is copied, and its
declared dependencies (``pyproject.toml`` of a checkout, else the installed
distribution's metadata) are installed for the target. The handlers are the
repository's ``lambdas/`` (or the installed ``lambdas`` package).

Builds are cached under ``$BUQUET_BUNDLE_CACHE`` (default ``~/.cache/buquet/lambda-bundles``)
by a SHA-256 of everything that goes in: the buquet and handler sources, the app
directory, requirement files, architecture, Python version, bytecode mode and platform
tags. A synth whose inputs did not change reuses the directory at once; the four most
recent bundles of each architecture are kept. Delete the cache to pick up newer
releases of unpinned dependencies (or pin them in your app's ``requirements.txt``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
#: the Lambda runtime's Python version when none is given
PYTHON_VERSION = "3.12"
#: Python versions of the Lambda runtimes the bundle can target
PYTHON_VERSIONS = ("3.11", "3.12", "3.13")
#: Amazon Linux 2023 (python3.12+ runtimes) has glibc 2.34
GLIBC_MINOR_MAX = 34
#: installed next to buquet in every bundle
HANDLER_REQUIREMENTS = ("aws-lambda-powertools>=3.0,<4",)
#: where the function's code is unpacked on Lambda (the file names compiled into .pyc)
LAMBDA_TASK_ROOT = "/var/task"
#: pip runs of one build: a source-only requirement costs one more
MAX_PIP_ROUNDS = 12
_COMPLETE = ".buquet-bundle-complete"
_SKIP_DIRS = {"__pycache__", ".git", ".venv", "venv", "node_modules", "cdk.out", ".pytest_cache", ".mypy_cache", ".hypothesis", ".buquet-data"}
_BUNDLE_FORMAT = "3"  # bump to invalidate every cached bundle
#: bundles kept per architecture (the least recently built beyond this are deleted)
KEEP_PER_ARCHITECTURE = 4
#: requirement-file options that say where packages come from (kept for pip wheel)
_INDEX_OPTIONS = ("-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--no-index", "--trusted-host")
_NOT_FOUND = re.compile(r"No matching distribution found for (\S+)")


class BundleError(RuntimeError):
    """The bundle could not be built (the message says why and what to do)."""


class NativeSourceDependency(BundleError):
    """A requirement has no wheel for the Lambda platform and its source distribution
    builds native code, which this machine cannot build for Lambda.

    Attributes:
        requirement: the requirement as pip reported it (``name==version``).
        wheel: the file name of the wheel built here (its tags show the native code).
    """

    def __init__(self, requirement: str, wheel: str, architecture: str, python_version: str) -> None:
        self.requirement, self.wheel = requirement, wheel
        super().__init__(
            f"{requirement} is published only as a source distribution, and it builds native code "
            f"(built here: {wheel}), which cannot run on Lambda ({architecture}, CPython {python_version}, "
            "manylinux). Use a version or an alternative that publishes manylinux wheels, or build the "
            "wheel on Amazon Linux 2023 for that architecture and put it in a directory named by a "
            "'--find-links <dir>' line of your requirements.txt."
        )


@dataclass(frozen=True)
class Bundle:
    """A built code directory.

    Attributes:
        path: the directory to hand to ``lambda.Code.from_asset``.
        digest: SHA-256 of the inputs (use it as the asset hash).
        built: ``True`` if this call built it, ``False`` if it came from the cache.
        seconds: build time (0 for a cache hit).
        python_version: the Python version it targets (``"3.12"``).
        precompiled: whether it holds ``.pyc`` files for that version.
        built_from_source: wheels made on this machine from source-only requirements
            (file names; empty for a cache hit).
    """

    path: Path
    digest: str
    built: bool
    seconds: float
    python_version: str = PYTHON_VERSION
    precompiled: bool = False
    built_from_source: tuple[str, ...] = ()


def platform_tags(architecture: str) -> list[str]:
    """pip ``--platform`` values accepted on Lambda for ``arm64``/``x86_64``.

    pip (at least up to 24.x) does not expand ``manylinux_2_34_x`` to the older
    ``manylinux_2_17``… tags, so every tag is listed.

    Raises:
        KeyError: an unknown architecture.
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


# ------------------------------------------------------------------ the inputs
def buquet_package_dir() -> Path:
    """The directory of the ``buquet`` package this process imports (the repository's
    ``buquet/`` in a checkout, site-packages' after ``pip install buquet``)."""
    import buquet

    return Path(buquet.__file__).resolve().parent


def handlers_dir() -> Path:
    """The handler package to bundle as ``lambdas/``: the repository's ``lambdas/``
    next to ``infra/``, else an importable ``lambdas`` package.

    Raises:
        BundleError: neither exists.
    """
    local = REPO / "lambdas"
    if (local / "worker.py").is_file():
        return local
    spec = importlib.util.find_spec("lambdas")
    if spec is not None and spec.origin and (Path(spec.origin).parent / "worker.py").is_file():
        return Path(spec.origin).resolve().parent
    raise BundleError(
        "the Lambda handlers (the 'lambdas' package with worker.py) were not found next to "
        f"{REPO / 'infra'} nor on sys.path: install buquet with the cdk extra, or run from a checkout"
    )


def buquet_requirements() -> list[str]:
    """buquet's runtime dependencies: ``[project].dependencies`` of the checkout's
    ``pyproject.toml`` next to the package, else the installed distribution's
    ``Requires-Dist`` without extras.

    Raises:
        BundleError: neither can be read.
    """
    pyproject = buquet_package_dir().parent / "pyproject.toml"
    if pyproject.is_file():
        project = tomllib.loads(pyproject.read_text()).get("project", {})
        if project.get("name") == "buquet":
            return [str(r) for r in project.get("dependencies", [])]
    try:
        from importlib import metadata

        reqs = metadata.requires("buquet") or []
    except Exception as exc:  # noqa: BLE001 - PackageNotFoundError and broken metadata alike
        raise BundleError(f"cannot read buquet's dependencies (no pyproject.toml, no metadata): {exc}") from exc
    return [r for r in reqs if "extra ==" not in r.replace('"', "").replace("'", "")]


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


def input_digest(
    app_path: Path | None, architecture: str, python_version: str = PYTHON_VERSION, precompiled: bool = True
) -> str:
    """SHA-256 over every input of the bundle (file names and contents, settings).

    Args:
        app_path: the user's package directory or ``.py`` file, or ``None``.
        architecture: ``"arm64"`` or ``"x86_64"``.
        python_version: the runtime's ``major.minor``.
        precompiled: whether the bundle holds bytecode.
    """
    h = hashlib.sha256()
    h.update(f"format={_BUNDLE_FORMAT}\0arch={architecture}\0py={python_version}\0pyc={precompiled}\0".encode())
    h.update(("\0".join(platform_tags(architecture)) + "\0" + "\0".join(HANDLER_REQUIREMENTS)).encode())
    h.update(("\0".join(buquet_requirements()) + "\0").encode())
    roots: list[tuple[str, Path]] = [("buquet", buquet_package_dir()), ("lambdas", handlers_dir())]
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


def _copy(src: Path, dest_dir: Path, name: str | None = None) -> None:
    """Copy a file or a directory (by its own name, or ``name``) into ``dest_dir``,
    without caches."""
    target = dest_dir / (name or src.name)
    if src.is_file():
        shutil.copy2(src, target)
        return
    shutil.copytree(
        src, target,
        ignore=lambda d, names: [n for n in names if n in _SKIP_DIRS or n.endswith((".pyc", ".pyo", ".egg-info"))],
    )


# ------------------------------------------------------------------ interpreters
def _version_of(python: str) -> str | None:
    """``major.minor`` of an interpreter, or ``None`` if it does not run."""
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_python(version: str) -> str | None:
    """An interpreter of Python ``version`` (``"3.12"``) on this machine, or ``None``.

    Looked for, in order: ``$BUQUET_LAMBDA_PYTHON``; the interpreter running this code;
    ``python<version>`` on ``PATH``; pyenv's installs (``$PYENV_ROOT`` or
    ``~/.pyenv``); uv's managed installs. Each candidate is run once to check its version
    (pyenv shims of versions not selected fail there and are skipped).

    Raises:
        BundleError: ``$BUQUET_LAMBDA_PYTHON`` is set but is not that version.
    """
    forced = os.environ.get("BUQUET_LAMBDA_PYTHON")
    if forced:
        got = _version_of(forced)
        if got != version:
            raise BundleError(f"BUQUET_LAMBDA_PYTHON={forced} is Python {got or '(not runnable)'}, the function runs {version}")
        return forced
    if "%d.%d" % sys.version_info[:2] == version:
        return sys.executable
    candidates: list[str] = []
    on_path = shutil.which(f"python{version}")
    if on_path:
        candidates.append(on_path)
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates += [str(p) for p in sorted((pyenv / "versions").glob(f"{version}.*/bin/python{version}"), reverse=True)]
    uv = Path(os.environ.get("UV_PYTHON_INSTALL_DIR") or Path.home() / ".local" / "share" / "uv" / "python")
    candidates += [str(p) for p in sorted(uv.glob(f"cpython-{version}.*/bin/python{version}"), reverse=True)]
    for candidate in candidates:
        if _version_of(candidate) == version:
            return candidate
    return None


_COMPILE = r"""
import compileall, os, py_compile, sys
root, ddir = sys.argv[1], sys.argv[2]
compileall.compile_dir(root, ddir=ddir, quiet=2, workers=0,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
tag = sys.implementation.cache_tag
sources = compiled = 0
for d, dirs, files in os.walk(root):
    dirs[:] = [x for x in dirs if x != "__pycache__"]
    for f in files:
        if f.endswith(".py"):
            sources += 1
            compiled += os.path.exists(os.path.join(d, "__pycache__", f[:-3] + "." + tag + ".pyc"))
print(sources, compiled, tag)
"""


def precompile(root: Path, python: str) -> tuple[int, int, str]:
    """Compile every ``.py`` under ``root`` with ``python`` into unchecked-hash ``.pyc``
    files whose code objects name ``/var/task/...`` (where Lambda unpacks the code).

    Files that do not compile (templates, code for other Python versions) are left as
    sources; Python compiles them at import, as without this step.

    Returns:
        ``(sources, compiled, cache_tag)`` — ``.py`` files found, of which compiled,
        and the interpreter's tag (``cpython-312``).

    Raises:
        BundleError: the interpreter failed.
    """
    out = subprocess.run([python, "-I", "-c", _COMPILE, str(root), LAMBDA_TASK_ROOT], capture_output=True, text=True)
    if out.returncode != 0:
        raise BundleError(f"compiling the bundle with {python} failed:\n{out.stderr[-4000:]}")
    sources, compiled, tag = out.stdout.split()
    return int(sources), int(compiled), tag


# ------------------------------------------------------------------------ pip
def _index_options(requirements: Path | None) -> list[str]:
    """The index and find-links options of a requirements file (relative find-links
    paths resolved against the file's directory), to build a wheel from the same
    sources pip installs from."""
    if requirements is None:
        return []
    out: list[str] = []
    for raw in requirements.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line.startswith(_INDEX_OPTIONS):
            continue
        opt, _, value = line.replace("=", " ", 1).partition(" ")
        value = value.strip()
        if opt in ("-f", "--find-links") and value and "://" not in value and not Path(value).is_absolute():
            value = str((requirements.parent / value).resolve())
        out += [opt, value] if value else [opt]
    return out


def _pip_install(
    target: Path, architecture: str, args: list[str], python_version: str = PYTHON_VERSION,
    find_links: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """One ``pip install --target`` for the Lambda platform (raises nothing: the
    caller reads the result)."""
    cmd = [
        sys.executable, "-m", "pip", "install",
        "--target", str(target),
        "--implementation", "cp",
        "--python-version", python_version,
        "--only-binary=:all:",
        "--no-compile",
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
    ]
    for tag in platform_tags(architecture):
        cmd += ["--platform", tag]
    if find_links is not None:
        cmd += ["--find-links", str(find_links)]
    cmd += args
    return subprocess.run(cmd, capture_output=True, text=True)


def _wheel_tags(name: str) -> tuple[str, str, str]:
    """``(python, abi, platform)`` tags of a wheel file name."""
    parts = name[: -len(".whl")].split("-")
    return parts[-3], parts[-2], parts[-1]


def build_source_wheel(requirement: str, dest: Path, index_options: list[str], architecture: str, python_version: str) -> Path:
    """Build ``requirement`` (published as source only) into a wheel in ``dest``.

    Returns:
        The wheel, if it is pure Python (``none-any``).

    Raises:
        NativeSourceDependency: the wheel holds native code (built for this machine).
        BundleError: pip could not build it (its output included).
    """
    before = set(dest.glob("*.whl"))
    cmd = [
        sys.executable, "-m", "pip", "wheel", "--no-deps",
        "--disable-pip-version-check", "--no-input", "--quiet", "-w", str(dest), *index_options, requirement,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True)
    new = sorted(set(dest.glob("*.whl")) - before)
    if out.returncode != 0 or not new:
        raise BundleError(
            f"{requirement} has no wheel for Lambda ({architecture}, CPython {python_version}) and building "
            f"it from source failed (pip exit {out.returncode}):\n$ {' '.join(cmd)}\n"
            f"{out.stdout[-3000:]}{out.stderr[-3000:]}"
        )
    [wheel] = new[:1]
    _, abi, plat = _wheel_tags(wheel.name)
    if abi != "none" or plat != "any":
        wheel.unlink()
        raise NativeSourceDependency(requirement, wheel.name, architecture, python_version)
    return wheel


def install(
    target: Path, architecture: str, args: list[str], python_version: str, wheelhouse: Path,
    requirements: Path | None = None, pip: Callable[..., subprocess.CompletedProcess[str]] | None = None,
) -> list[str]:
    """``pip install`` ``args`` into ``target`` for Lambda, building pure-Python wheels
    of source-only requirements into ``wheelhouse`` as pip names them.

    Returns:
        File names of the wheels built from source.

    Raises:
        NativeSourceDependency: a source-only requirement has native code.
        BundleError: pip failed otherwise (its command and output in the message).
    """
    run = pip or _pip_install
    wheelhouse.mkdir(parents=True, exist_ok=True)
    built: list[str] = []
    tried: set[str] = set()
    for _ in range(MAX_PIP_ROUNDS):
        result = run(target, architecture, args, python_version, wheelhouse)
        if result.returncode == 0:
            return built
        missing = _NOT_FOUND.findall(result.stdout + result.stderr)
        if not missing or missing[-1] in tried:
            raise BundleError(
                f"building the Lambda bundle for {architecture} failed (pip exit {result.returncode}):\n"
                f"$ pip install --target {target} ... {' '.join(args)}\n{result.stdout[-4000:]}{result.stderr[-4000:]}"
            )
        requirement = missing[-1]
        tried.add(requirement)
        wheel = build_source_wheel(requirement, wheelhouse, _index_options(requirements), architecture, python_version)
        built.append(wheel.name)
    raise BundleError(f"gave up after {MAX_PIP_ROUNDS} pip runs; source-only requirements built so far: {built}")


def _strip(site: Path) -> None:
    """Drop what the runtime never loads: console scripts and bytecode caches."""
    shutil.rmtree(site / "bin", ignore_errors=True)
    for cache in list(site.rglob("__pycache__")):
        shutil.rmtree(cache, ignore_errors=True)


def _warn(message: str) -> None:
    print(f"[buquet] WARNING: {message}", file=sys.stderr)


def build(
    app_path: Path | None,
    architecture: str,
    *,
    python_version: str = PYTHON_VERSION,
    precompile_mode: bool | None = None,
    cache: Path | None = None,
    log: bool = True,
) -> Bundle:
    """Build (or reuse) the bundle for ``architecture`` with the app at ``app_path``.

    Args:
        app_path: the user's package directory or ``.py`` file, or ``None``.
        architecture: ``"arm64"`` or ``"x86_64"``.
        python_version: the function runtime's ``major.minor`` (one of
            :data:`PYTHON_VERSIONS`).
        precompile_mode: ``None`` compile to ``.pyc`` if an interpreter of
            ``python_version`` is found (:func:`find_python`), else warn and ship
            sources; ``True`` requires it; ``False`` ships sources only.
        cache: the cache root (default :func:`cache_root`).
        log: print a one-line summary to stderr (the CDK CLI shows it).

    Returns:
        The :class:`Bundle`.

    Raises:
        ValueError: an unsupported ``python_version``.
        NativeSourceDependency: a dependency is published only as native source.
        BundleError: pip failed (no wheel for the platform, no network, ...; pip's
            output included), or ``precompile_mode=True`` and no interpreter of
            ``python_version`` exists here.
    """
    if python_version not in PYTHON_VERSIONS:
        raise ValueError(f"python_version {python_version!r}: expected one of {', '.join(PYTHON_VERSIONS)}")
    python = find_python(python_version) if precompile_mode is not False else None
    if python is None and precompile_mode is True:
        raise BundleError(
            f"no Python {python_version} interpreter found to precompile the bundle for the python{python_version} "
            f"runtime: install one (pyenv, uv, your OS packages) or point BUQUET_LAMBDA_PYTHON at it, or pick "
            f"the runtime of the Python you have (buquet:pythonVersion)"
        )
    if python is None and precompile_mode is None:
        _warn(
            f"no Python {python_version} interpreter found: the bundle ships without .pyc files, and every cold "
            f"start compiles the imported modules again (about twice the import time; docs/serverless.md). Install "
            f"Python {python_version} or set BUQUET_LAMBDA_PYTHON, or set buquet:pythonVersion to your Python's version."
        )
    precompiled = python is not None
    digest = input_digest(app_path, architecture, python_version, precompiled)
    root = cache or cache_root()
    final = root / f"{architecture}-{digest[:32]}"
    if (final / _COMPLETE).exists():
        return Bundle(final, digest, False, 0.0, python_version, precompiled)
    started = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".build-{architecture}-", dir=root))
    try:
        out = work / "out"
        req = _requirements_file(app_path)
        args = [*buquet_requirements(), *HANDLER_REQUIREMENTS]
        if req is not None:
            args += ["-r", str(req)]
        from_source = install(out, architecture, args, python_version, work / "wheelhouse", req)
        _copy(buquet_package_dir(), out, "buquet")
        _copy(handlers_dir(), out, "lambdas")
        if app_path is not None:
            _copy(app_path, out)
        _strip(out)
        summary = ""
        if python is not None:
            sources, compiled, tag = precompile(out, python)
            summary = f", {compiled}/{sources} modules compiled for {tag}"
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
        built_note = f"; built from source: {', '.join(from_source)}" if from_source else ""
        print(
            f"[buquet] built the {architecture} Lambda bundle in {seconds:.1f} s "
            f"({directory_size(final) / 1e6:.1f} MB unzipped{summary}{built_note}): {final}",
            file=sys.stderr,
        )
    return Bundle(final, digest, True, seconds, python_version, precompiled, tuple(from_source))


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
    handlers = handlers_dir()
    for f in _files(handlers):
        h.update(f.relative_to(handlers.parent).as_posix().encode() + b"\0" + f.read_bytes())
    digest = h.hexdigest()
    root = cache or cache_root()
    final = root / f"placeholder-{digest[:32]}"
    if not (final / _COMPLETE).exists():
        root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".build-placeholder-", dir=root))
        try:
            out = work / "out"
            out.mkdir()
            _copy(handlers, out, "lambdas")
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


__all__ = [
    "Bundle",
    "BundleError",
    "NativeSourceDependency",
    "PYTHON_VERSIONS",
    "build",
    "build_source_wheel",
    "buquet_package_dir",
    "buquet_requirements",
    "cache_root",
    "directory_size",
    "find_python",
    "handlers_dir",
    "input_digest",
    "install",
    "placeholder",
    "platform_tags",
    "precompile",
]
