"""Tests of glmkit.data.datasets: the demo cohort, the Localizer loader (offline), folders."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import json
import logging
import shutil
import threading
import urllib.parse
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from glmkit.data import datasets
from glmkit._util import sha256_file
from glmkit.data.datasets import Dataset, load_dataset, load_demo, load_folder, load_localizer
from glmkit.errors import DataFileNotFoundError, DatasetError, ImageError, ParameterError

MISSING_PSEUDO = ["S15", "S38", "S62", "S81", "S87"]


def _tree_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _load(ds: Dataset, subjects=None) -> np.ndarray:
    subjects = ds.subjects if subjects is None else subjects
    index = {s: m for s, m in zip(ds.subjects, ds.maps)}
    return np.stack([np.asarray(nib.load(index[s]).dataobj) for s in subjects])


# --------------------------------------------------------------------------- demo


def test_demo_grid_and_table(demo):
    assert demo.name == "demo" and len(demo) == 94
    assert demo.subjects == tuple(f"S{i:02d}" for i in range(1, 95))
    assert list(demo.table.columns) == ["subject", "pseudo", "age", "sex", "site"]
    assert sorted(demo.table.loc[demo.table["pseudo"].isna(), "subject"]) == MISSING_PSEUDO
    assert demo.table["age"].isna().any()
    assert set(demo.table["site"]) == {"SHFJ", "Neurospin"}
    img = nib.load(demo.maps[0])
    assert img.shape == (53, 63, 46)
    assert img.get_data_dtype() == np.float32
    np.testing.assert_allclose(np.diag(img.affine), [-3, 3, 3, 1])
    np.testing.assert_allclose(img.affine[:3, 3], [78, -112, -50])
    mask = nib.load(Path(demo.provenance["root"]) / "mask.nii.gz")
    np.testing.assert_allclose(mask.affine, img.affine)
    assert 50_000 < np.asarray(mask.dataobj).sum() < 90_000
    assert all(Path(m).is_absolute() and Path(m).is_file() for m in demo.maps)


def test_demo_provenance_and_readme(demo):
    prov = demo.provenance
    assert prov["random_state"] == datasets.DEMO_RANDOM_STATE
    assert prov["effect_size"] == datasets.DEMO_EFFECT_SIZE > 0
    assert prov["planted_region"]["center_mm"] == [38.0, -17.0, -3.0]
    root = Path(prov["root"])
    assert set(demo.maps) < set(prov["sha256"])  # absolute paths, as for every loader
    for path, digest in prov["sha256"].items():
        assert Path(path).parent in (root, root / "maps") and sha256_file(path) == digest
    stored = json.loads((root / "provenance.json").read_text())
    assert {str(root / name) for name in stored["sha256"]} == set(prov["sha256"])
    assert "root" not in stored  # no machine path in the generated files
    readme = (root / "README.md").read_text()
    assert "radius 10 mm" in readme and "S23: scale_x100" in readme
    assert "38" in demo.description and "defects" in demo.description


def test_demo_ground_truth_is_the_documented_sphere(demo):
    img = nib.load(demo.ground_truth)
    truth = np.asarray(img.dataobj) > 0
    mask = np.asarray(nib.load(Path(demo.provenance["root"]) / "mask.nii.gz").dataobj) > 0
    assert truth.sum() == demo.provenance["planted_region"]["n_voxels"]
    assert not (truth & ~mask).any()
    xyz = nib.affines.apply_affine(img.affine, np.argwhere(truth))
    centre = np.asarray(demo.provenance["planted_region"]["center_mm"])
    assert np.linalg.norm(xyz - centre, axis=1).max() <= 10.0
    np.testing.assert_allclose(xyz.mean(0), centre, atol=1.5)


def test_demo_defects(demo):
    defects = demo.provenance["defects"]
    assert sorted(defects.values()) == ["missing_coverage", "scale_x100"]
    pseudo = demo.table.set_index("subject")["pseudo"]
    assert pseudo[list(defects)].notna().all()
    inv = {kind: s for s, kind in defects.items()}
    mask = np.asarray(nib.load(Path(demo.provenance["root"]) / "mask.nii.gz").dataobj) > 0
    normal = ["S01", "S02", "S03", "S04"]
    data = _load(demo, [inv["scale_x100"], inv["missing_coverage"], *normal])
    scale = np.median(np.abs(data[:, mask]), axis=1)
    assert 70 < scale[0] / np.median(scale[2:]) < 140
    # coverage: the top third of the brain (by z) is empty in the defect map only
    z = np.nonzero(mask)[2]
    top = mask.copy()
    top[..., : z.min() + 2 * (z.max() - z.min()) // 3 + 1] = False
    covered = (data[:, top] != 0).mean(axis=1)
    assert covered[1] == 0.0 and (covered[2:] > 0.99).all()
    assert (data[1][mask & ~top] != 0).mean() > 0.99


def _pseudo_correlation(ds: Dataset) -> np.ndarray:
    """Voxelwise correlation of pseudo with the maps, clean subjects only (volume)."""
    table = ds.table
    keep = table["pseudo"].notna() & ~table["subject"].isin(list(ds.provenance["defects"]))
    data = _load(ds, list(table.loc[keep, "subject"])).reshape(keep.sum(), -1).astype(float)
    x = table.loc[keep, "pseudo"].to_numpy()
    x = (x - x.mean()) / x.std()
    data -= data.mean(0)
    sd = data.std(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x @ data) / len(x) / sd
    return r.reshape(nib.load(ds.maps[0]).shape)


def test_demo_planted_effect_recoverable(demo, demo_null):
    truth = np.asarray(nib.load(demo.ground_truth).dataobj) > 0
    mask = np.asarray(nib.load(Path(demo.provenance["root"]) / "mask.nii.gz").dataobj) > 0
    outside = mask & ~truth
    r = _pseudo_correlation(demo)
    r_null = _pseudo_correlation(demo_null)
    # association: r in the region is clearly positive (n=87: SE ~ 0.11), outside ~ 0
    assert r[truth].mean() > 0.2
    assert abs(r[outside].mean()) < 0.05
    assert r[truth].mean() - r[outside].mean() > 0.15
    # null: the same cohort without the effect shows no such difference
    assert abs(r_null[truth].mean() - r_null[outside].mean()) < 0.1
    # same noise: outside the region the two variants are identical
    a, b = _load(demo, ["S01"])[0], _load(demo_null, ["S01"])[0]
    np.testing.assert_array_equal(a[~truth], b[~truth])
    assert not np.array_equal(a[truth], b[truth])
    assert demo_null.ground_truth is None and demo_null.provenance["effect_size"] == 0.0
    assert demo_null.provenance["defects"] == demo.provenance["defects"]


def test_demo_regeneration_is_byte_identical(demo, tmp_path, caplog):
    reference = _tree_hashes(Path(demo.provenance["root"]))
    with caplog.at_level(logging.INFO, logger="glmkit"):
        fresh = load_demo(data_dir=tmp_path)
    assert "generated demo 'association' in" in caplog.text  # time logged, not asserted
    assert _tree_hashes(Path(fresh.provenance["root"])) == reference
    forced = load_demo(data_dir=tmp_path, force=True)
    assert _tree_hashes(Path(forced.provenance["root"])) == reference
    # gzip headers carry no timestamp and no file name
    with open(forced.maps[0], "rb") as handle:
        head = handle.read(10)
    assert head[4:8] == b"\x00\x00\x00\x00" and not head[3] & 0x08


def test_demo_corrupt_cache_is_regenerated(demo_null, tmp_path, caplog):
    root = tmp_path / "demo" / "null"
    shutil.copytree(demo_null.provenance["root"], root)
    reference = _tree_hashes(root)
    victim = root / "maps" / "S10.nii.gz"
    victim.write_bytes(victim.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="glmkit"):
        ds = load_demo("null", data_dir=tmp_path)
    assert "unusable" in caplog.text and "S10.nii.gz" in caplog.text
    assert _tree_hashes(Path(ds.provenance["root"])) == reference


def test_demo_concurrent_generation_loser_uses_winner(demo, tmp_path, monkeypatch):
    source = Path(demo.provenance["root"])
    target = tmp_path / "demo" / "association"

    def other_worker_wins(tmp, variant):  # another process renames its copy in first
        shutil.copytree(source, target)
        shutil.copytree(source, tmp, dirs_exist_ok=True)

    monkeypatch.setattr(datasets, "generate_demo", other_worker_wins)
    ds = load_demo(data_dir=tmp_path)
    assert ds.provenance["root"] == str(target) and len(ds) == 94
    assert [p.name for p in tmp_path.joinpath("demo").iterdir()] == ["association"]


def test_demo_bad_variant():
    with pytest.raises(ParameterError, match=r"variant='assoc'.*expected one of"):
        load_demo("assoc")


def test_load_dataset_dispatch(demo, demo_null, glmkit_data_dir, tmp_path):
    assert load_dataset("demo").maps == demo.maps
    assert load_dataset("demo-null", data_dir=glmkit_data_dir).name == "demo-null"
    with pytest.raises(DataFileNotFoundError, match="neither a known name"):
        load_dataset("demo-nul")
    with pytest.raises(ParameterError, match="needs table="):
        load_dataset(tmp_path)
    with pytest.raises(ParameterError, match="'demo' dataset brings its own table"):
        load_dataset("demo", table="participants.tsv")


# --------------------------------------------------------------------------- Dataset


def test_dataset_methods(demo):
    sub = demo.subset(["S05", "S02", "S03"])
    assert sub.subjects == ("S02", "S03", "S05")  # dataset order kept
    assert sub.maps == (demo.maps[1], demo.maps[2], demo.maps[4])
    frame = sub.to_frame()
    assert list(frame.columns[:2]) == ["subject", "map"] and frame["map"].tolist() == list(sub.maps)
    text = demo.summary()
    assert "94 subjects" in text and "(53, 63, 46)" in text and "pseudo: float64, 5 missing" in text
    with pytest.raises(DatasetError, match=r"subjects \['S99'\] are not in dataset 'demo'"):
        demo.subset(["S01", "S99"])


def test_dataset_validates_itself():
    table = pd.DataFrame({"subject": ["a", "a"]})
    with pytest.raises(DatasetError, match=r"duplicated subject ids \['a'\]"):
        Dataset("x", ("1.nii", "2.nii"), table)
    with pytest.raises(DatasetError, match="1 maps but 2 table rows"):
        Dataset("x", ("1.nii",), pd.DataFrame({"subject": ["a", "b"]}))
    with pytest.raises(DatasetError, match="first column must be 'subject'"):
        Dataset("x", ("1.nii",), pd.DataFrame({"id": ["a"]}))


# --------------------------------------------------------------------------- localizer


def _seed_nilearn_localizer(root: Path, contrast: str, subjects: list[str]) -> None:
    """Pre-seed a nilearn data dir exactly where fetch_localizer_contrasts looks."""
    import nilearn
    from nilearn.datasets.func import CONTRAST_NAME_WRAPPER

    data = Path(nilearn.__file__).parent / "datasets" / "tests" / "data"
    # nilearn's own naming: "left button press (auditory cue)" -> "LeftAuditoryClick"
    wrapped = CONTRAST_NAME_WRAPPER.get(contrast, contrast).title().replace(" ", "")
    base = root / "brainomics_localizer"
    index = {
        "/localizer/participants.tsv": "/p0000",
        "/localizer/phenotype/behavioural.tsv": "/b0000",
    }
    rng = np.random.default_rng(0)
    for i, s in enumerate(subjects):
        key = (
            f"/localizer/derivatives/spm_1st_level/sub-{s}/sub-{s}_task-localizer"
            f"_acq-{wrapped}_cmaps.nii.gz"
        )
        index[key] = f"/c{i:04d}"
        path = base / "brainomics_data" / s / f"cmaps_{wrapped}.nii.gz"
        path.parent.mkdir(parents=True)
        nib.save(nib.Nifti1Image(rng.standard_normal((4, 5, 6)).astype("f4"), np.eye(4)), path)
    (base / "download").write_text(json.dumps(index))  # the OSF index file
    (base / "brainomics_data" / "phenotype").mkdir()
    shutil.copy(data / "localizer_participants.tsv", base / "brainomics_data" / "participants.tsv")
    shutil.copy(
        data / "localizer_behavioural.tsv", base / "brainomics_data" / "phenotype" / "behavioural.tsv"
    )


@pytest.fixture
def no_network(monkeypatch):
    """Any HTTP request fails the test."""
    import socket

    import requests

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(requests.Session, "send", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_load_localizer_offline(tmp_path, no_network):
    contrast = "left button press (auditory cue)"
    _seed_nilearn_localizer(tmp_path, contrast, [f"S{i:02d}" for i in range(1, 16)])
    ds = load_localizer(contrast, n_subjects=15, data_dir=tmp_path)
    assert ds.name == "localizer" and ds.subjects == tuple(f"S{i:02d}" for i in range(1, 16))
    assert list(ds.table.columns) == ["subject", "pseudo", "age", "sex", "site"]
    assert [Path(m).parent.name for m in ds.maps] == list(ds.subjects)
    seeded = Path(tmp_path, "brainomics_localizer", "brainomics_data")
    real = pd.read_csv(seeded / "participants.tsv", sep="\t")
    assert ds.table["site"].tolist() == real["site"][:15].tolist()
    pseudo = ds.table.set_index("subject")["pseudo"]
    assert pseudo.isna().sum() == 1 and np.isnan(pseudo["S15"])  # the real n/a
    assert set(ds.provenance["sha256"]) == set(ds.maps)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"contrast": "left button"}, "unknown contrast"),
        ({"n_subjects": 0}, "expected an integer from 1 to 94"),
        ({"n_subjects": 95}, "expected an integer from 1 to 94"),
    ],
)
def test_load_localizer_bad_parameters(kwargs, match, tmp_path, no_network):
    with pytest.raises(ParameterError, match=match):
        load_localizer(**kwargs, data_dir=tmp_path)


# --------------------------------------------------------------------------- localizer download
#
# The real download path, end to end, against a fake OSF on 127.0.0.1. nilearn
# (fetch_localizer_contrasts, nilearn 0.14) hard-codes two https URLs: the OSF index
# https://osf.io/hwbm2/download (a JSON {"/localizer/<path>": "/<osf id>"}) and the files
# https://osf.io/download/<osf id>/, and sends every request through requests.Session.send
# -> HTTPAdapter.send. `fake_osf` rewrites https://osf.io/... to http://127.0.0.1:<port>/...
# at the HTTPAdapter (nothing else of nilearn is patched), and refuses any other connection
# or DNS lookup (recorded, so an escape fails the test even if an error swallowed it).

LOCALIZER_CONTRAST = "left button press (auditory cue)"
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _localizer_key(subject: str, kind: str = "cmaps") -> str:
    from nilearn.datasets.func import CONTRAST_NAME_WRAPPER

    acq = CONTRAST_NAME_WRAPPER[LOCALIZER_CONTRAST].title().replace(" ", "")
    return (
        f"/localizer/derivatives/spm_1st_level/sub-{subject}/sub-{subject}_task-localizer"
        f"_acq-{acq}_{kind}.nii.gz"
    )


@functools.lru_cache(maxsize=1)
def _fake_osf_content() -> tuple[dict[str, bytes], dict[str, bytes], dict[str, str]]:
    """The real tables from nilearn's tests data, 94 small fake maps and the OSF index."""
    import nilearn

    data = Path(nilearn.__file__).parent / "datasets" / "tests" / "data"
    tsv = {
        "participants": (data / "localizer_participants.tsv").read_bytes(),
        "behavioural": (data / "localizer_behavioural.tsv").read_bytes(),
    }
    index = {
        "/localizer/participants.tsv": "/ptsv1",
        "/localizer/phenotype/behavioural.tsv": "/btsv1",
    }
    maps: dict[str, bytes] = {}
    for i in range(1, 95):
        subject = f"S{i:02d}"
        index[_localizer_key(subject)] = f"/c{i:04d}"
        index[_localizer_key(subject, "tmaps")] = f"/t{i:04d}"  # listed, never served
        data_i = np.random.default_rng(i).standard_normal((10, 10, 10)).astype("f4")
        img = nib.Nifti1Image(data_i, np.diag([3.0, 3.0, 3.0, 1.0]))
        maps[subject] = gzip.compress(img.to_bytes(), mtime=0)
    return tsv, maps, index


class _FakeOSF:
    """What nilearn downloads from OSF for the Localizer, served on 127.0.0.1.

    ``files`` maps URL paths to bytes; ``faults`` maps a URL path to ``("status", code)``,
    ``("cut", n)`` (announce the full length, send ``n`` bytes, close) or ``("body", b)``
    (serve other bytes, consistently). ``requests`` lists the paths asked for, in order.
    """

    INDEX = "/hwbm2/download"

    def __init__(self) -> None:
        self.tsv, self.maps, index = _fake_osf_content()
        self.files = {self.INDEX: json.dumps(index).encode()}
        self.files["/download/ptsv1/"] = self.tsv["participants"]
        self.files["/download/btsv1/"] = self.tsv["behavioural"]
        self.files.update({f"/download/c{s[1:].zfill(4)}/": b for s, b in self.maps.items()})
        self.faults: dict[str, tuple] = {}
        self.requests: list[str] = []

    @staticmethod
    def map_path(subject: str) -> str:
        return f"/download/c{subject[1:].zfill(4)}/"

    def handler(self):
        osf = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = urllib.parse.urlsplit(self.path).path
                osf.requests.append(path)
                kind, arg = osf.faults.get(path, (None, None))
                body = osf.files.get(path)
                if kind == "status" or body is None:
                    self.send_error(arg or 404)
                    return
                sent = arg if kind == "body" else body
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(sent)))
                self.end_headers()  # HTTP/1.0: the connection closes after each answer
                self.wfile.write(sent[:arg] if kind == "cut" else sent)

            def log_message(self, *args) -> None:
                pass

        return Handler


@pytest.fixture
def fake_osf(monkeypatch, tmp_path):
    """A fake OSF on 127.0.0.1; https://osf.io is redirected to it; no other network."""
    import socket

    import requests

    escapes: list = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def allowed(sock, address) -> bool:
        return sock.family == socket.AF_UNIX or (
            isinstance(address, tuple) and address[0] in _LOOPBACK
        )

    def connect(sock, address):
        if not allowed(sock, address):
            escapes.append(address)
            raise ConnectionRefusedError(f"the test blocks network access to {address!r}")
        return real_connect(sock, address)

    def connect_ex(sock, address):
        if not allowed(sock, address):
            escapes.append(address)
            raise ConnectionRefusedError(f"the test blocks network access to {address!r}")
        return real_connect_ex(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in (None, *_LOOPBACK):
            escapes.append(host)
            raise socket.gaierror(f"the test blocks DNS lookups of {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    osf = _FakeOSF()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), osf.handler())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    real_send = requests.adapters.HTTPAdapter.send

    def send(adapter, request, *args, **kwargs):
        parts = urllib.parse.urlsplit(request.url)
        if parts.hostname == "osf.io":
            request.url = base + urllib.parse.urlunsplit(("", "", parts.path, parts.query, ""))
            kwargs["proxies"] = {}  # an http_proxy in the environment must not catch it
        return real_send(adapter, request, *args, **kwargs)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
    # nilearn's other data folders point into tmp_path: a stray write shows up there
    monkeypatch.setenv("NILEARN_DATA", str(tmp_path / "nilearn_data"))
    monkeypatch.delenv("NILEARN_SHARED_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    try:
        yield osf
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert not escapes, f"network access outside 127.0.0.1: {escapes}"


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def test_load_localizer_downloads_from_loopback_osf(fake_osf, tmp_path):
    n = 40
    data_dir = tmp_path / "data"
    ds = load_localizer(LOCALIZER_CONTRAST, n_subjects=n, data_dir=data_dir)

    subjects = [f"S{i:02d}" for i in range(1, n + 1)]
    assert fake_osf.requests == [
        _FakeOSF.INDEX,
        *[_FakeOSF.map_path(s) for s in subjects],
        "/download/ptsv1/",
        "/download/btsv1/",
    ]
    # the Dataset: n maps, in subject order, with the real tables joined
    assert ds.name == "localizer" and len(ds) == n and ds.subjects == tuple(subjects)
    assert list(ds.table.columns) == ["subject", "pseudo", "age", "sex", "site"]
    participants = pd.read_csv(io.BytesIO(fake_osf.tsv["participants"]), sep="\t").iloc[:n]
    behavioural = pd.read_csv(io.BytesIO(fake_osf.tsv["behavioural"]), sep="\t").iloc[:n]
    for column, source in [("age", participants), ("sex", participants),
                           ("site", participants), ("pseudo", behavioural)]:
        np.testing.assert_array_equal(ds.table[column], source[column], err_msg=column)
    assert ds.table.loc[ds.table["pseudo"].isna(), "subject"].tolist() == ["S15", "S38"]
    assert [s for s in MISSING_PSEUDO if s in subjects] == ["S15", "S38"]  # the real n/a
    # the files: written under data_dir, byte for byte what the server sent
    root = data_dir / "brainomics_localizer"
    for subject, path in zip(subjects, ds.maps):
        assert Path(path).parent == (root / "brainomics_data" / subject).resolve()
        assert Path(path).read_bytes() == fake_osf.maps[subject]
    assert (root / "download").is_file()  # nilearn's copy of the OSF index
    assert not list(root.rglob("*.part")) and not (tmp_path / "nilearn_data").exists()
    assert not (tmp_path / "home").exists()
    # provenance
    prov = ds.provenance
    assert prov["source"] == "nilearn.datasets.fetch_localizer_contrasts"
    assert (prov["contrast"], prov["n_subjects"], prov["root"]) == (
        LOCALIZER_CONTRAST, n, str(root.resolve())
    )
    assert prov["sha256"] == {m: _sha256(fake_osf.maps[s]) for s, m in zip(subjects, ds.maps)}
    resolved = root.resolve() / "brainomics_data"
    assert prov["tables_sha256"] == {
        str(resolved / "participants.tsv"): _sha256(fake_osf.tsv["participants"]),
        str(resolved / "phenotype" / "behavioural.tsv"): _sha256(fake_osf.tsv["behavioural"]),
    }
    # a second call is served from the cache: the server sees no request
    seen = len(fake_osf.requests)
    again = load_localizer(LOCALIZER_CONTRAST, n_subjects=n, data_dir=data_dir)
    assert len(fake_osf.requests) == seen
    assert again.maps == ds.maps and again.provenance == ds.provenance
    pd.testing.assert_frame_equal(again.table, ds.table)


def test_load_localizer_default_folder_is_nilearns(fake_osf, tmp_path, glmkit_data_dir):
    """Without data_dir the maps go to nilearn's data dir ($NILEARN_DATA), not GLMKIT_DATA."""
    before = sorted(glmkit_data_dir.rglob("*"))
    ds = load_localizer(LOCALIZER_CONTRAST, n_subjects=2)
    root = (tmp_path / "nilearn_data" / "brainomics_localizer").resolve()
    assert ds.provenance["root"] == str(root) and all(Path(m).is_relative_to(root) for m in ds.maps)
    assert sorted(glmkit_data_dir.rglob("*")) == before


_BAD_MAP = b"<html>bad gateway</html>"


@pytest.mark.parametrize(
    ("fault_path", "fault", "error", "match", "delete"),
    [
        pytest.param(
            _FakeOSF.INDEX, ("status", 500), DatasetError,
            r"server answered 500 Internal Server Error for http://127\.0\.0\.1:\d+/hwbm2/"
            r"download\. Check the internet connection.*call load_localizer again with the same "
            r"arguments: files already downloaded are reused",
            None, id="index-500",
        ),
        pytest.param(
            "/download/c0003/", ("status", 404), DatasetError,
            r"server answered 404 Not Found for http://127\.0\.0\.1:\d+/download/c0003/\. "
            r"Check the internet connection.*call load_localizer again",
            None, id="map-404",
        ),
        pytest.param(
            "/download/c0003/", ("cut", 100), DatasetError,
            r"download interrupted \(partial files: \[.*c0003\.part'\]\) failed "
            r"\(ChunkedEncodingError: .*IncompleteRead.*call load_localizer again",
            None, id="map-cut-mid-transfer",
        ),
        pytest.param(
            "/download/c0003/", ("body", "half"), ImageError,
            r"map .*brainomics_data/S03/cmaps_LeftAuditoryClick\.nii\.gz is truncated or corrupt"
            r".*delete \S+/S03/cmaps_LeftAuditoryClick\.nii\.gz and call load_localizer again",
            ["brainomics_data/S03/cmaps_LeftAuditoryClick.nii.gz"], id="map-truncated-file",
        ),
        pytest.param(
            "/download/ptsv1/", ("body", "3 lines"), DatasetError,
            r"subjects \['S03', 'S04', 'S05'\] are missing from the subject tables .*"
            r"participants\.tsv.*behavioural\.tsv.*delete these two files and call load_loc",
            ["brainomics_data/participants.tsv", "brainomics_data/phenotype/behavioural.tsv"],
            id="table-truncated-file",
        ),
        pytest.param(
            _FakeOSF.INDEX, ("body", _BAD_MAP), DatasetError,
            r"OSF index file \S+brainomics_localizer/download is not valid JSON .*"
            r"Delete \S+/download and call load_localizer again",
            ["download"], id="index-not-json",
        ),
    ],
)
def test_load_localizer_download_errors(fake_osf, tmp_path, fault_path, fault, error, match,
                                        delete):
    """Each failure names what failed and how to fix it; following the advice works."""
    kind, arg = fault
    if arg == "half":  # header intact, data cut
        arg = fake_osf.files[fault_path][: len(fake_osf.files[fault_path]) // 2]
    elif arg == "3 lines":
        arg = b"".join(fake_osf.files[fault_path].splitlines(keepends=True)[:3])
    fake_osf.faults[fault_path] = (kind, arg)
    data_dir = tmp_path / "data"
    with pytest.raises(error, match=match):
        load_localizer(LOCALIZER_CONTRAST, n_subjects=5, data_dir=data_dir)
    assert fault_path in fake_osf.requests
    first = list(fake_osf.requests)

    fake_osf.faults.clear()  # the server recovers; the user follows the message
    for relative in delete or []:
        (data_dir / "brainomics_localizer" / relative).unlink()
    ds = load_localizer(LOCALIZER_CONTRAST, n_subjects=5, data_dir=data_dir)
    fetched_ok = {p for p in first if p.startswith("/download/c") and p != fault_path}
    assert not fetched_ok & set(fake_osf.requests[len(first):])  # "files ... are reused"
    assert ds.subjects == ("S01", "S02", "S03", "S04", "S05")
    assert Path(ds.maps[2]).read_bytes() == fake_osf.maps["S03"]
    assert ds.table["site"].notna().all()


# --------------------------------------------------------------------------- folders


def _write_maps(folder: Path, names: list[str], rng, shape=(4, 5, 6)) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names:
        data = rng.standard_normal(shape).astype("f4")
        cls = nib.AnalyzeImage if name.endswith(".hdr") else nib.Nifti1Image
        nib.save(cls(data, np.diag([2.0, 2.0, 2.0, 1.0])), folder / name)
        out[name] = data
    return out


def _table(path: Path, ids, sep="\t", column="participant_id", **extra) -> Path:
    frame = pd.DataFrame({column: ids, "score": np.arange(len(ids), dtype=float), **extra})
    frame.to_csv(path, sep=sep, index=False)
    return path


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".hdr"])
def test_load_folder_formats(ext, tmp_path, rng):
    names = [f"sub-{s}_con{ext}" for s in ("02", "01", "10")]
    written = _write_maps(tmp_path / "maps", names, rng)
    table = _table(tmp_path / "participants.tsv", ["01", "02", "10"])
    ds = load_folder(tmp_path / "maps", table, subject_column="participant_id")
    assert ds.name == "maps" and ds.subjects == ("01", "02", "10")  # ids kept as text
    assert [Path(m).name for m in ds.maps] == [names[1], names[0], names[2]]
    np.testing.assert_array_equal(np.asarray(nib.load(ds.maps[2]).dataobj), written[names[2]])
    assert list(ds.table.columns) == ["subject", "score"]
    assert set(ds.provenance["sha256"]) == set(ds.maps)


def test_load_folder_glob_csv_and_longest_match(tmp_path, rng):
    _write_maps(tmp_path, ["sub-1_con.nii", "sub-11_con.nii", "sub-11_tmap.nii"], rng)
    table = _table(tmp_path / "t.csv", ["sub-1", "1", "sub-11"], sep=",", column="subject")
    ds = load_folder(str(tmp_path / "*_con.nii"), table, on_missing="drop")
    # "sub-1_con" holds both "1" and "sub-1": the longest id wins; "1" is left without a map
    assert ds.subjects == ("sub-1", "sub-11")
    assert [Path(m).name for m in ds.maps] == ["sub-1_con.nii", "sub-11_con.nii"]


def test_load_folder_on_missing(tmp_path, rng, caplog):
    _write_maps(tmp_path / "m", ["S1.nii.gz", "S2.nii.gz", "extra_S9.nii.gz"], rng)
    table = _table(tmp_path / "t.tsv", ["S1", "S2", "S3"], column="subject")
    expected = r"maps without a row: \['extra_S9.nii.gz'\]; rows without a map: \['S3'\]"
    with pytest.raises(DatasetError, match=expected):
        load_folder(tmp_path / "m", table)
    with caplog.at_level(logging.WARNING, logger="glmkit"):
        ds = load_folder(tmp_path / "m", table, on_missing="drop")
    assert ds.subjects == ("S1", "S2")
    assert "extra_S9.nii.gz" in caplog.text and "S3" in caplog.text


def test_load_folder_4d(tmp_path, rng, glmkit_data_dir):
    data = rng.standard_normal((4, 5, 6, 3)).astype("f4")
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "all.nii.gz")
    table = _table(tmp_path / "t.tsv", ["a", "b", "c"], column="subject")
    ds = load_folder(tmp_path / "all.nii.gz", table)
    assert ds.subjects == ("a", "b", "c")
    for i, path in enumerate(ds.maps):
        img = nib.load(path)
        assert img.shape == (4, 5, 6) and Path(path).is_relative_to(glmkit_data_dir / "split")
        np.testing.assert_array_equal(np.asarray(img.dataobj), data[..., i])
    assert load_folder(tmp_path / "all.nii.gz", table).maps == ds.maps  # cached split
    # the same as Analyze (.hdr/.img pair), named by its .img: split like NIfTI
    nib.save(nib.AnalyzeImage(data, np.eye(4)), tmp_path / "all.hdr")
    analyze = load_folder(tmp_path / "all.img", table)
    np.testing.assert_array_equal(np.asarray(nib.load(analyze.maps[2]).dataobj), data[..., 2])


def test_load_folder_single_volume_4d_is_stored_as_3d(tmp_path, rng):
    data = rng.standard_normal((4, 5, 6, 1)).astype("f4")
    (tmp_path / "m").mkdir()
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "m" / "S1_con.nii")
    _write_maps(tmp_path / "m", ["S2_con.nii"], rng)
    ds = load_folder(tmp_path / "m", _table(tmp_path / "t.tsv", ["S1", "S2"], column="subject"))
    assert [nib.load(m).shape for m in ds.maps] == [(4, 5, 6), (4, 5, 6)]
    np.testing.assert_array_equal(np.asarray(nib.load(ds.maps[0]).dataobj), data[..., 0])
    assert ds.maps[1] == str(tmp_path / "m" / "S2_con.nii")


# --------------------------------------------------------------------------- bad inputs


@pytest.fixture
def good(tmp_path, rng):
    _write_maps(tmp_path / "maps", ["S1.nii.gz", "S2.nii.gz"], rng)
    return tmp_path / "maps", _table(tmp_path / "t.tsv", ["S1", "S2"], column="subject")


def test_bad_missing_paths(good, tmp_path):
    maps, table = good
    with pytest.raises(DataFileNotFoundError, match=r"maps '.*nowhere' does not exist"):
        load_folder(tmp_path / "nowhere", table)
    with pytest.raises(DataFileNotFoundError, match=r"table file .*missing.tsv does not exist"):
        load_folder(maps, tmp_path / "missing.tsv")
    with pytest.raises(DataFileNotFoundError, match="matches no file"):
        load_folder(str(tmp_path / "*.nii.gz"), table)
    with pytest.raises(DataFileNotFoundError, match=r"map files not found: \[.*gone.nii"):
        load_folder([maps / "S1.nii.gz", maps / "gone.nii"], table)


def test_bad_empty_folder(tmp_path, good):
    _, table = good
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DataFileNotFoundError, match=r"holds no image .*\['notes.txt'\]"):
        load_folder(tmp_path / "empty", table)


def test_bad_extensions(good, tmp_path):
    maps, table = good
    (maps / "S3.mgz").write_bytes(b"x")
    with pytest.raises(ImageError, match=r"S3.mgz'\] have an unsupported extension"):
        load_folder(str(maps / "S*"), table)
    xlsx = tmp_path / "t.xlsx"
    xlsx.write_bytes(b"PK")
    with pytest.raises(DatasetError, match=r"extension '.xlsx'; expected one of"):
        load_folder(maps, xlsx)


def test_bad_table_contents(good, tmp_path):
    maps, _ = good
    expected = (r"no subject column 'subject' or 'participant_id'; its columns are "
                r"\['pid', 'score'\]")
    with pytest.raises(DatasetError, match=expected):
        load_folder(maps, _table(tmp_path / "a.tsv", ["S1", "S2"], column="pid"))
    assert load_folder(maps, _table(tmp_path / "p.tsv", ["S1", "S2"])).subjects == ("S1", "S2")
    with pytest.raises(DatasetError, match=r"duplicated subject ids \['S1'\]"):
        load_folder(maps, _table(tmp_path / "b.tsv", ["S1", "S1", "S2"], column="subject"))
    garbage = tmp_path / "c.tsv"
    garbage.write_bytes(b"subject\tscore\n\xff\xfe\x00S1\t1\t2\t3\n")
    with pytest.raises(DatasetError, match=r"cannot be read as TSV"):
        load_folder(maps, garbage)


def test_bad_count_mismatch(good, tmp_path):
    maps, _ = good
    table = _table(tmp_path / "t3.tsv", ["S1", "S2", "S3"], column="subject")
    with pytest.raises(DatasetError, match=r"2 maps, 3 table rows; .*rows without a map: \['S3'\]"):
        load_folder(maps, table)


def test_bad_ambiguous(tmp_path, rng):
    _write_maps(tmp_path / "m", ["S1_S2.nii", "S3_con.nii", "S3_tmap.nii"], rng)
    table = _table(tmp_path / "t.tsv", ["S1", "S2", "S3"], column="subject")
    expected = r"ambiguous .*S1_S2.nii -> \['S1', 'S2'\].*S3 -> \['S3_con.nii', 'S3_tmap.nii'\]"
    with pytest.raises(DatasetError, match=expected):
        load_folder(tmp_path / "m", table)


def test_bad_4d(tmp_path, rng, good):
    _, table = good
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 3), "f4"), np.eye(4)), tmp_path / "all.nii.gz")
    expected = r"all.nii.gz is 4-D with 3 volumes where 3-D maps were expected .*2 table rows"
    with pytest.raises(ImageError, match=expected):
        load_folder(tmp_path / "all.nii.gz", table)
    _write_maps(tmp_path / "mixed", ["S1.nii.gz"], rng)
    shutil.copy(tmp_path / "all.nii.gz", tmp_path / "mixed" / "S2.nii.gz")
    with pytest.raises(ImageError, match="S2.nii.gz is 4-D"):
        load_folder(tmp_path / "mixed", table)


def test_bad_corrupt_files(good, tmp_path):
    maps, table = good
    _write_maps(maps, ["S2.nii.gz"], np.random.default_rng(2), shape=(20, 20, 20))
    full = (maps / "S2.nii.gz").read_bytes()
    (maps / "S2.nii.gz").write_bytes(full[: len(full) // 2])  # header intact, data cut
    with pytest.raises(ImageError, match=r"map .*S2.nii.gz is truncated or corrupt"):
        load_folder(maps, table)
    (maps / "S2.nii.gz").write_bytes(gzip.compress(b"not a nifti header" * 30))
    with pytest.raises(ImageError, match=r"map .*S2.nii.gz cannot be read as NIfTI/Analyze"):
        load_folder(maps, table)
    raw = tmp_path / "raw"
    _write_maps(raw, ["S1.nii", "S2.nii"], np.random.default_rng(1))
    (raw / "S1.nii").write_bytes((raw / "S1.nii").read_bytes()[:400])
    with pytest.raises(ImageError, match=r"S1.nii is truncated or corrupt"):
        load_folder(raw, table)


def test_bad_on_missing_value(good):
    maps, table = good
    with pytest.raises(ParameterError, match="on_missing='ignore'"):
        load_folder(maps, table, on_missing="ignore")
