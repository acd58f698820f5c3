"""Build the lab's Talos stand-in boot image: a Debian kernel and a compressed initramfs.

Real Talos images are unreachable here, so the lab boots a small image built only from
Debian packages (``apt-get download`` + ``dpkg -x``, never installed on the host), a few
PyPI wheels and the project's own stand-in code. The result lives in a cache directory
named by the hash of everything that went into it, so a second run is a lookup and a
changed input (a new agent revision, a kernel update) yields a new directory instead of
silently reusing a stale image.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import OperationError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "provisioner" / "lab-image"

# Debian packages unpacked into the image (their shared-library closure is added on top).
PACKAGES = [
    "busybox-static",
    "libc6",
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libssl3",
    "libffi8",
    "zlib1g",
    "libexpat1",
    "libbz2-1.0",
    "liblzma5",
    "libuuid1",
    "etcd-server",
    "etcd-client",
    "extlinux",
    "syslinux-common",
    "e2fsprogs",
    "fdisk",
    "dosfstools",
    "media-types",
    # UEFI installs (standin/platform.py): the systemd-boot loader, and mtools to fill the ESP.
    "systemd-boot-efi",
    "mtools",
]
# Wheels for the stand-in's Python side (cp311 manylinux or pure Python).
WHEELS = ["grpclib", "h2", "hpack", "hyperframe", "multidict", "protobuf", "cryptography", "cffi", "PyYAML"]
# Kernel modules loaded by /init (their dependencies are added from .modinfo).
MODULES = [
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "virtio_rng",
    "ext4",
    "vfat",
    "nls_cp437",
    "nls_iso8859-1",
    "crc32c_generic",
]
# The project's code the stand-in runs (paths relative to the repository root).
PROJECT_CODE = [
    "provisioner/__init__.py",
    "provisioner/errors.py",
    "provisioner/fsutil.py",
    "provisioner/lab/__init__.py",
    "provisioner/lab/standin",
    "provisioner/lab/kube",  # the Kubernetes API server stand-in, VIP election, kubelet (nodeagent.py)
    "provisioner/talosapi",
]
# Run by the lab daemon on the host, not in the guests (provisioner/lab/controllers.py says why).
PROJECT_CODE_EXCLUDED = ["provisioner/lab/kube/cozysim"]
INIT_SCRIPT = REPO_ROOT / "provisioner/lab/standin/init.sh"

# Parts of the unpacked packages the stand-in never uses: dropped to keep the image
# small (TCG decompresses and iPXE downloads every byte).
_PRUNE = [
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/lintian",
    "usr/share/locale",
    "usr/share/i18n",
    "usr/share/bug",
    "usr/share/gdb",
    "usr/lib/python3.11/test",
    "usr/lib/python3.11/idlelib",
    "usr/lib/python3.11/tkinter",
    "usr/lib/python3.11/turtledemo",
    "usr/lib/python3.11/ensurepip",
    "usr/lib/python3.11/lib2to3",
    "usr/lib/python3.11/pydoc_data",
    "usr/lib/python3.11/distutils",
    "usr/lib/python3.11/unittest",
    "usr/lib/python3.11/config-3.11-x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu/audit",
    "usr/lib/syslinux/modules/efi32",
    "usr/lib/syslinux/modules/efi64",
    "usr/share/syslinux/com32",
]
# glibc's iconv modules: all dropped but what mtools (UEFI installs fill the ESP with it) needs to
# convert file names to FAT's default codepage 850; the module configuration that names it stays.
GCONV_DIR = "usr/lib/x86_64-linux-gnu/gconv"
GCONV_KEEP = ("IBM850.so",)
# Extension modules whose libraries (ncurses, readline, Berkeley DB, NIS, sqlite) are not
# in the image: removed rather than shipped broken.
_DROP_EXT = ("readline", "_curses", "_curses_panel", "_dbm", "_gdbm", "nis", "_sqlite3", "_tkinter")


@dataclass(frozen=True)
class Image:
    """A built image: where its files are and what went into it."""

    directory: Path
    kernel: Path
    initramfs: Path
    manifest: dict[str, object]


def _run(cmd: list[str], cwd: Path | None = None, quiet: bool = True) -> str:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-8:]
        raise OperationError(f"image build: {' '.join(cmd[:3])} ... failed: " + " | ".join(tail))
    return res.stdout


def kernel_package() -> str:
    """The versioned kernel package Debian's ``linux-image-amd64`` currently points at."""
    out = _run(["apt-cache", "depends", "linux-image-amd64"])
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends:") and "linux-image-6." in line:
            return line.split(":", 1)[1].strip()
    raise OperationError(
        "image build: apt-cache knows no linux-image-6.* behind linux-image-amd64 (apt-get update?)"
    )


def download_debs(names: Iterable[str], debs: Path) -> dict[str, Path]:
    """Fetch each package's .deb into ``debs`` unless a file for it is already there."""
    debs.mkdir(parents=True, exist_ok=True)
    want = list(dict.fromkeys(names))
    have = {p.name.split("_", 1)[0]: p for p in debs.glob("*.deb")}
    missing = [n for n in want if n not in have]
    if missing:
        log.info("apt-get download %s", " ".join(missing))
        _run(["apt-get", "-q", "-o", "APT::Sandbox::User=root", "download", *missing], cwd=debs)
        have = {p.name.split("_", 1)[0]: p for p in debs.glob("*.deb")}
    lost = [n for n in want if n not in have]
    if lost:
        raise OperationError(f"image build: apt-get download did not produce {', '.join(lost)}")
    return {n: have[n] for n in want}


def _merge_usr(src: Path, dst: Path) -> None:
    """Copy an unpacked package into the image, folding /bin, /sbin, /lib* into /usr
    (Debian 12 is merged-/usr; the image root holds only symlinks for those)."""
    for top in src.iterdir():
        target_top = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}.get(
            top.name, top.name
        )
        dest = dst / target_top
        if top.is_dir() and not top.is_symlink():
            shutil.copytree(top, dest, symlinks=True, dirs_exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists() or dest.is_symlink():
                dest.unlink()
            shutil.copy2(top, dest, follow_symlinks=False)


def _elf_needed(path: Path) -> list[str]:
    """DT_NEEDED entries of an ELF file (readelf keeps this free of a parser dependency)."""
    res = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True)
    out = []
    for line in res.stdout.splitlines():
        if "(NEEDED)" in line and "[" in line:
            out.append(line.rsplit("[", 1)[1].rstrip("]"))
    return out


def _is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def _lib_dirs(root: Path) -> list[Path]:
    return [root / "usr/lib/x86_64-linux-gnu", root / "usr/lib", root / "usr/lib64"]


def missing_libraries(root: Path) -> dict[str, list[str]]:
    """Sonames some ELF file in ``root`` needs that the image does not contain."""
    present: set[str] = set()
    for d in _lib_dirs(root):
        if d.is_dir():
            present.update(p.name for p in d.iterdir())
    missing: dict[str, list[str]] = {}
    for p in root.rglob("*"):
        if p.is_symlink() or not p.is_file() or p.suffix in (".ko", ".c32") or not _is_elf(p):
            continue
        for so in _elf_needed(p):
            if so not in present:
                missing.setdefault(so, []).append(str(p.relative_to(root)))
    return missing


def _package_of(soname: str) -> str | None:
    """The Debian package shipping a library, asked of the host's dpkg database."""
    res = subprocess.run(["dpkg", "-S", f"*/x86_64-linux-gnu/{soname}"], capture_output=True, text=True)
    if res.returncode != 0 or not res.stdout:
        return None
    return res.stdout.splitlines()[0].split(":", 1)[0].strip()


def _modinfo_depends(ko: Path) -> list[str]:
    data = ko.read_bytes()
    for field in data.split(b"\0"):
        if field.startswith(b"depends="):
            return [d for d in field[8:].decode().split(",") if d]
    return []


def _install_modules(kroot: Path, root: Path, kver: str) -> list[str]:
    """Copy the wanted modules and their dependencies; write modules.dep for modprobe.
    Returns the names loaded in dependency order."""
    src = kroot / "lib/modules" / kver
    index = {p.stem.replace("-", "_"): p for p in src.rglob("*.ko")}
    order: list[str] = []
    deps: dict[str, list[str]] = {}

    def visit(name: str) -> None:
        key = name.replace("-", "_")
        if key in deps:
            return
        if key not in index:
            raise OperationError(f"image build: kernel {kver} has no module {name}")
        deps[key] = [d.replace("-", "_") for d in _modinfo_depends(index[key])]
        for d in deps[key]:
            visit(d)
        order.append(key)

    for m in MODULES:
        visit(m)
    dst = root / "usr/lib/modules" / kver
    lines = []
    for key in order:
        rel = index[key].relative_to(src)
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(index[key], dst / rel)

        def closure(k: str, acc: list[str]) -> list[str]:
            for d in deps[k]:
                if d not in acc:
                    acc.append(d)
                    closure(d, acc)
            return acc

        # depmod's convention: modprobe loads the listed dependencies from last to first,
        # so a module's own dependencies must come after it.
        needed = set(closure(key, []))
        ordered = [d for d in reversed(order) if d in needed]
        lines.append(f"{rel}: " + " ".join(str(index[d].relative_to(src)) for d in ordered))
    (dst / "modules.dep").write_text("\n".join(lines) + "\n")
    for extra in ("modules.builtin", "modules.order", "modules.builtin.modinfo"):
        if (src / extra).exists():
            shutil.copy2(src / extra, dst / extra)
    return order


def _wheels(target: Path, cache: Path) -> None:
    """Install the stand-in's Python packages for CPython 3.11 on glibc x86-64."""
    key = hashlib.sha256(" ".join(WHEELS).encode()).hexdigest()[:16]
    store = cache / f"site-packages-{key}"
    if not (store / ".complete").exists():
        tmp = Path(tempfile.mkdtemp(prefix="site-", dir=cache))
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile"]
        cmd += [
            "--target",
            str(tmp),
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            "3.11",
        ]
        for plat in ("manylinux2014_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64", "any"):
            cmd += ["--platform", plat]
        _run([*cmd, *WHEELS])
        (tmp / ".complete").touch()
        if store.exists():
            shutil.rmtree(store)
        tmp.rename(store)
    # The *.dist-info folders stay: some packages read their own version from them at import.
    shutil.copytree(store, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".complete", "RECORD"))


def _project_files() -> list[Path]:
    files: list[Path] = []
    for rel in PROJECT_CODE:
        p = REPO_ROOT / rel
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
        elif p.is_file():
            files.append(p)
    excluded = [REPO_ROOT / rel for rel in PROJECT_CODE_EXCLUDED]
    return [f for f in files if not any(f.is_relative_to(x) for x in excluded)]


def _copy_project(root: Path) -> None:
    site = root / "usr/lib/python3/dist-packages"
    for f in _project_files():
        dest = site / f.relative_to(REPO_ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest)
    # provisioner/lab/__init__.py and friends exist in the repo; make sure every package
    # directory copied is importable even if an __init__ is missing upstream.
    for d in (site / "provisioner").rglob("*"):
        if d.is_dir() and d.name != "__pycache__" and not (d / "__init__.py").exists():
            (d / "__init__.py").write_text("")


def _etc(root: Path) -> None:
    etc = root / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\netcd:x:0:0:etcd:/var/lib/etcd:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\n")
    (etc / "hosts").write_text("127.0.0.1 localhost\n")
    (etc / "os-release").write_text(
        'NAME="Talos (stand-in)"\nID=talos-standin\nPRETTY_NAME="Talos stand-in (provisioner lab)"\n'
    )
    (etc / "nsswitch.conf").write_text("passwd: files\ngroup: files\nhosts: files dns\n")


def _busybox_links(root: Path) -> None:
    bb = root / "usr/bin/busybox"
    applets = _run([str(bb), "--list-full"]).split()
    for a in applets:
        dest = root / "usr" / a if a.startswith(("bin/", "sbin/")) else root / a
        if not dest.exists() and not dest.is_symlink():
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to("/usr/bin/busybox")


def _pack(root: Path, out: Path) -> None:
    """newc cpio of ``root`` with sorted names and root ownership, compressed with zstd
    (the Debian kernel has CONFIG_RD_ZSTD; decompression is cheap even under TCG)."""
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    listing = "\n".join(names) + "\n"
    with open(out, "wb") as fh:
        cpio = subprocess.Popen(
            ["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0", "--reproducible"],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        zstd = subprocess.Popen(["zstd", "-q", "-12", "-T0", "-c"], stdin=cpio.stdout, stdout=fh)
        assert cpio.stdin is not None and cpio.stdout is not None
        cpio.stdout.close()
        cpio.stdin.write(listing.encode())
        cpio.stdin.close()
        if cpio.wait() != 0 or zstd.wait() != 0:
            raise OperationError("image build: packing the initramfs failed (cpio/zstd)")


def input_hash(debs: dict[str, Path]) -> str:
    """Content hash of every input: package files, wheel list, modules, project code, this builder."""
    h = hashlib.sha256()
    for name in sorted(debs):
        h.update(debs[name].name.encode())
    h.update(" ".join(WHEELS + MODULES).encode())
    for f in [*_project_files(), INIT_SCRIPT, Path(__file__)]:
        h.update(str(f.relative_to(REPO_ROOT)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:20]


def build(cache: Path | None = None, link: Path | None = None, force: bool = False) -> Image:
    """Build (or find in the cache) the stand-in image; optionally point ``link`` at it."""
    cache = Path(cache or os.environ.get("PROVISIONER_LAB_IMAGE_CACHE") or DEFAULT_CACHE).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    if not INIT_SCRIPT.exists():
        raise OperationError(f"image build: {INIT_SCRIPT} is missing")
    kpkg = kernel_package()
    debs = download_debs([kpkg, *PACKAGES], cache / "debs")
    # Shared-library closure: resolved once per package set and remembered in the cache.
    extra_file = cache / "debs" / "extra-packages.json"
    extra: list[str] = json.loads(extra_file.read_text()) if extra_file.exists() else []
    if extra:
        debs.update(download_debs(extra, cache / "debs"))
    digest = input_hash(debs)
    out = cache / digest
    if (out / "manifest.json").exists() and not force:
        img = Image(
            out, out / "vmlinuz", out / "initramfs.zst", json.loads((out / "manifest.json").read_text())
        )
        _link(link, out)
        return img

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="build-", dir=cache))
    try:
        root, kroot = work / "root", work / "kernel"
        for d in (
            "usr/bin",
            "usr/sbin",
            "usr/lib",
            "usr/lib64",
            "proc",
            "sys",
            "dev",
            "run",
            "tmp",
            "var/lib",
            "mnt",
            "root",
            "etc",
        ):
            (root / d).mkdir(parents=True, exist_ok=True)
        for name in ("bin", "sbin", "lib", "lib64"):
            (root / name).symlink_to(f"usr/{name}")
        _run(["dpkg-deb", "-x", str(debs[kpkg]), str(kroot)])
        # Wheels first: their extension modules count in the shared-library closure below.
        _wheels(root / "usr/lib/python3/dist-packages", cache)
        _copy_project(root)
        while True:
            for name, deb in debs.items():
                if name == kpkg:
                    continue
                unpacked = work / "pkgs" / name
                if not unpacked.exists():
                    unpacked.parent.mkdir(parents=True, exist_ok=True)
                    _run(["dpkg-deb", "-x", str(deb), str(unpacked)])
                    _merge_usr(unpacked, root)
            for rel in _PRUNE:
                shutil.rmtree(root / rel, ignore_errors=True)
            for module in (root / GCONV_DIR).glob("*.so"):
                if module.name not in GCONV_KEEP:
                    module.unlink()
            for ext in (root / "usr/lib/python3.11/lib-dynload").glob("*.so"):
                if ext.name.split(".", 1)[0] in _DROP_EXT:
                    ext.unlink()
            missing = missing_libraries(root)
            if not missing:
                break
            pkgs = {so: _package_of(so) for so in missing}
            unknown = [so for so, p in pkgs.items() if p is None or p in debs]
            if unknown:
                raise OperationError(
                    "image build: no package found for "
                    + ", ".join(f"{so} (needed by {missing[so][0]})" for so in unknown)
                )
            new = sorted({p for p in pkgs.values() if p})
            log.info("adding library packages %s", " ".join(new))
            extra = sorted(set(extra) | set(new))
            extra_file.write_text(json.dumps(extra))
            debs.update(download_debs(new, cache / "debs"))
        # The library closure may have added packages: name the image by the final set.
        digest = input_hash(debs)
        out = cache / digest
        kver = kpkg.removeprefix("linux-image-")
        modules = _install_modules(kroot, root, kver)
        _busybox_links(root)
        (root / "usr/bin/python3").symlink_to("python3.11")
        _etc(root)
        shutil.copy2(INIT_SCRIPT, root / "init")
        os.chmod(root / "init", 0o755)
        # Bytecode compiled ahead: Python runs ~20x slower under TCG, compiling at boot would
        # cost seconds. unchecked-hash pycs stay valid whatever mtimes the cpio carries.
        _run(
            [
                sys.executable,
                "-m",
                "compileall",
                "-q",
                "-j",
                "0",
                "--invalidation-mode",
                "unchecked-hash",
                str(root / "usr/lib/python3.11"),
                str(root / "usr/lib/python3/dist-packages"),
            ]
        )
        manifest: dict[str, object] = {
            "hash": digest,
            "kernel_package": debs[kpkg].name,
            "kernel_version": kver,
            "packages": sorted(p.name for p in debs.values()),
            "wheels": WHEELS,
            "modules": modules,
            "built_seconds": 0.0,
        }
        (root / "etc/standin-image.json").write_text(json.dumps(manifest, indent=1))
        stage = work / "out"
        stage.mkdir()
        shutil.copy2(next((kroot / "boot").glob("vmlinuz-*")), stage / "vmlinuz")
        _pack(root, stage / "initramfs.zst")
        manifest["built_seconds"] = round(time.monotonic() - started, 1)
        manifest["initramfs_bytes"] = (stage / "initramfs.zst").stat().st_size
        (stage / "manifest.json").write_text(json.dumps(manifest, indent=1))
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    finally:
        _rmtree(work)
    _link(link, out)
    _prune(cache, keep=out)
    return Image(out, out / "vmlinuz", out / "initramfs.zst", manifest)


def _prune(cache: Path, keep: Path, count: int = 3) -> None:
    """Keep the newest few images (a running lab may still use the previous one)."""
    images = sorted(
        (d for d in cache.iterdir() if (d / "manifest.json").exists() and d != keep),
        key=lambda d: d.stat().st_mtime,
        reverse=True,
    )
    for old in images[count - 1 :]:
        shutil.rmtree(old, ignore_errors=True)


def _rmtree(path: Path) -> None:
    def onerror(func: object, p: str, exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(p, stat.S_IRWXU)
            if os.path.isdir(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.unlink(p)

    shutil.rmtree(path, onerror=onerror)


def _link(link: Path | None, target: Path) -> None:
    if link is None:
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, link)


def main(argv: list[str] | None = None) -> int:
    """``python -m provisioner.lab.image [--cache DIR] [--link PATH] [--force]``: build, print where."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--link", type=Path, default=REPO_ROOT / ".lab" / "image")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="lab-image: %(message)s")
    started = time.monotonic()
    try:
        img = build(args.cache, args.link, args.force)
    except OperationError as exc:
        print(f"lab-image: error: {exc}", file=sys.stderr)
        return 1
    size = img.initramfs.stat().st_size / 2**20
    print(
        f"lab-image: {img.directory} (kernel {img.manifest['kernel_version']}, initramfs {size:.1f} MiB) "
        f"in {time.monotonic() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
