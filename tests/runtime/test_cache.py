"""The converted-model cache: it prunes only the files hyperseg wrote, never follows a link, turns a
full or read-only cache and a killed conversion process into one ResourceError, and refuses bad
settings before anything is converted."""
import errno
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import hyperseg
import hyperseg.runtime.cache as cache
from hyperseg.hub.checkpoint import atomic_write
from hyperseg.errors import HypersegError, ResourceError

SAMPLE = Path(hyperseg.__file__).resolve().parent / "assets" / "camvid_sample_1.png"
KEY = "0123456789abcdef0123"  # 20 hex digits, as cached_onnx keys its files
OLD = 1577836800  # 2020-01-01


def _tiny_conv():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1)).eval()
    model.num_classes = 2
    return model


def _tiny_hyperseg():
    return hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite0", num_classes=3,
                                 weight_groups=[16, 16, 8, 8, 4]).eval()


def _put(path, size, mtime):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    os.utime(path, (mtime, mtime))
    return path


def _snapshot(root):
    """Every entry under root, links included and not followed: kind, size, mtime and content."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            if path.is_symlink():
                seen[path] = ("link", os.readlink(path))
            elif path.is_dir():
                seen[path] = ("dir",)
            else:
                seen[path] = ("file", st.st_size, st.st_mtime, hashlib.sha256(path.read_bytes()).hexdigest())
    return seen


# ------------------------------------------------------------------------------------------ pruning

FOREIGN = {  # name: size in bytes; none of them is a name hyperseg writes where it writes it
    "a.onnx": 100,
    "notes.txt": 5_000_000,
    "photo.jpg": 1,
    "hyperseg-64x64-fp32-0123.onnx": 300,  # key too short
    f"hyperseg-64x64-fp16-{KEY}.onnx": 300,  # a precision we never write
    f"hyperseg-64x64-fp32-{KEY.upper()}.onnx": 300,  # our keys are lower-case
    f"hyperseg-64x64-fp32-{KEY}.onnx.bak": 300,
    f"hyperseg-64x64-fp32-{KEY}.fp32.onnx": 300,  # only int8 conversions have a float intermediate
    f"models/hyperseg-64x64-fp32-{KEY}.onnx": 2_000,  # our name, but in a folder of the user's
    "openvino/1234567890.blob": 3_000,  # an OpenVINO cache hyperseg did not mark as its own
    "hyperseg-openvino-old/1234567890.blob": 3_000,
}


@pytest.mark.parametrize("age", [OLD, 4_000_000_000])  # far older and far newer than our own file
def test_files_hyperseg_did_not_write_survive_a_prune_to_zero_bytes(tmp_path, age):
    for name, size in FOREIGN.items():
        _put(tmp_path / name, size, age)
    before = _snapshot(tmp_path)
    own = _put(tmp_path / f"hyperseg-64x64-fp32-{KEY}.onnx", 10, OLD + 1)
    assert cache.prune_cache(0, root=tmp_path) == [own]
    assert _snapshot(tmp_path) == before


def test_foreign_files_do_not_count_against_the_limit(tmp_path):
    _put(tmp_path / "big-user-file.bin", 1_000_000, OLD)
    _put(tmp_path / f"hyperseg-64x64-fp32-{KEY}.onnx", 100, OLD)
    assert cache.prune_cache(100, root=tmp_path) == []  # our 100 bytes are within the limit


def test_our_own_files_go_least_recently_used_first(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERSEG_CACHE", str(tmp_path))
    blobs = cache.openvino_cache_dir()
    assert blobs == tmp_path / cache.OPENVINO_FOLDER and (blobs / cache.OWNER_MARK).is_file()
    files = [  # (path, size), oldest first: every kind of file hyperseg writes
        (tmp_path / f"hyperseg-360x480-fp32-{'1' * 20}.onnx", 100),
        (tmp_path / f"smp_FPN-dynamic-fp32-{'2' * 20}.onnx", 200),
        (tmp_path / f"hyperseg-64x64-int8-{'3' * 20}.fp32.onnx", 300),
        (blobs / "12345678901234567890.blob", 400),
        (tmp_path / f"hyperseg-64x64-int8-{'4' * 20}.onnx", 50),
    ]
    for i, (path, size) in enumerate(files):
        _put(path, size, OLD + i)
    # 1050 bytes, limit 600: the three oldest go (-> 950, 750, 450), the blob and the newest stay
    assert cache.prune_cache(600, root=tmp_path) == [path for path, _ in files[:3]]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        [cache.OWNER_MARK, files[3][0].name, files[4][0].name])
    # a kept file is never deleted, even when it is the oldest and the limit is 0; the mark stays
    os.utime(files[3][0], (1, 1))
    assert cache.prune_cache(0, keep=(files[3][0],), root=tmp_path) == [files[4][0]]
    assert files[3][0].is_file() and (blobs / cache.OWNER_MARK).is_file()
    assert cache.prune_cache(0, root=tmp_path) == [files[3][0]]


def test_links_in_the_cache_are_never_followed_or_deleted(tmp_path):
    outside, root = tmp_path / "outside", tmp_path / "cache"
    target = _put(outside / "precious.onnx", 50_000, OLD)
    marked = outside / "blobs"
    _put(marked / cache.OWNER_MARK, 10, OLD)
    _put(marked / "111.blob", 50_000, OLD)
    _put(outside / "folder" / f"hyperseg-64x64-fp32-{KEY}.onnx", 50_000, OLD)
    root.mkdir()
    (root / f"hyperseg-64x64-fp32-{KEY}.onnx").symlink_to(target)  # a link with our name, to a file
    (root / f"hyperseg-32x32-fp32-{KEY}.onnx").symlink_to(outside / "missing.onnx")  # dangling
    (root / cache.OPENVINO_FOLDER).symlink_to(marked, target_is_directory=True)  # our folder's name, a marked folder
    (root / "linked-folder").symlink_to(outside / "folder", target_is_directory=True)
    for link in root.iterdir():
        os.utime(link, (OLD, OLD), follow_symlinks=False)
    before = _snapshot(tmp_path)
    assert cache.prune_cache(0, root=root) == []
    assert _snapshot(tmp_path) == before


def test_a_folder_of_our_name_that_we_did_not_make_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERSEG_CACHE", str(tmp_path))
    theirs = _put(tmp_path / cache.OPENVINO_FOLDER / "42.blob", 1000, OLD)
    before = _snapshot(tmp_path)
    assert cache.openvino_cache_dir() is None  # OpenVINO compiles without a blob cache then
    assert cache.prune_cache(0, root=tmp_path) == []
    assert _snapshot(tmp_path) == before and theirs.is_file()


def _tiny_onnx(path, *, auto_pad=None):
    """A one-convolution ONNX file with hyperseg's metadata; auto_pad="BOGUS" makes it fail to load."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from hyperseg.runtime.onnx_export import write_onnx_meta

    weight = numpy_helper.from_array(np.linspace(-1, 1, 2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3), "w")
    conv = helper.make_node("Conv", ["image", "w"], ["logits"],
                            **({"auto_pad": auto_pad} if auto_pad else {"pads": [1, 1, 1, 1]}))
    graph = helper.make_graph([conv], "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, 32, 32])], [weight])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    write_onnx_meta(proto, {"class_names": ["a", "b"], "mean": [0.5] * 3, "std": [0.25] * 3, "num_classes": 2})
    onnx.save(proto, str(path))
    return path


def test_openvino_writes_its_blobs_into_our_marked_folder_and_they_are_pruned(tmp_path, monkeypatch):
    """The oracle for OpenVINO's blob names is OpenVINO itself: what it writes, prune_cache recognises."""
    pytest.importorskip("openvino")
    from hyperseg.runtime.onnx_runtimes import OpenVinoRuntime

    model = _tiny_onnx(tmp_path / "tiny.onnx")
    root = tmp_path / "cache"
    monkeypatch.setenv("HYPERSEG_CACHE", str(root))
    OpenVinoRuntime(model).run(np.zeros((1, 3, 32, 32), np.float32))  # compiled, and its blob cached, on first use
    blobs = [p for p in (root / cache.OPENVINO_FOLDER).iterdir() if p.name != cache.OWNER_MARK]
    assert blobs and all(p.suffix == ".blob" for p in blobs)
    assert sorted(cache.prune_cache(0, root=root)) == sorted(blobs)
    assert [p.name for p in (root / cache.OPENVINO_FOLDER).iterdir()] == [cache.OWNER_MARK]


# ------------------------------------------------------------------- the machine's failures

def _fill_the_disk_while_writing(code):
    """An exporter whose file write fails as a full or read-only disk makes it fail."""
    def export(model, path, **kwargs):
        def write(f):
            f.write(b"the first bytes")
            raise OSError(code, os.strerror(code))

        atomic_write(path, write)
        return path

    return export


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_cache_that_cannot_take_the_file_is_a_resource_error_naming_it(code, tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERSEG_CACHE", str(tmp_path))
    monkeypatch.setattr(cache, "export_onnx", _fill_the_disk_while_writing(code))
    with pytest.raises(ResourceError) as err:
        cache.cached_onnx(_tiny_conv(), (32, 32), "fp32")
    message = str(err.value)
    assert f"HYPERSEG_CACHE={tmp_path}" in message and os.strerror(code) in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_an_export_that_runs_out_of_memory_is_a_resource_error(tmp_path, monkeypatch):
    from hyperseg.runtime.onnx_export import ExportError

    def export(model, path, **kwargs):
        try:
            raise MemoryError
        except MemoryError:  # as the exporter words any failure: its own one line, chained to the cause
            raise ExportError("cannot export Sequential to ONNX: MemoryError") from None

    monkeypatch.setenv("HYPERSEG_CACHE", str(tmp_path))
    monkeypatch.setattr(cache, "export_onnx", export)
    with pytest.raises(ResourceError, match="converting the model for 32x32 ran out of memory"):
        cache.cached_onnx(_tiny_conv(), (32, 32), "fp32")


def test_a_read_only_cache_is_refused_before_converting(tmp_path, monkeypatch):
    # we run as root, where chmod cannot make a folder read-only: the probe's file creation fails instead
    monkeypatch.setenv("HYPERSEG_CACHE", str(tmp_path / "cache"))
    real = cache.tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):
        if Path(dir) == tmp_path / "cache":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(Path(dir) / ".hyperseg-probe-x"))
        return real(*args, dir=dir, **kwargs)

    def must_not_convert(*args):
        raise AssertionError("converted into a read-only cache")

    monkeypatch.setattr(cache.tempfile, "mkstemp", read_only)
    monkeypatch.setattr(cache, "_make", must_not_convert)
    with pytest.raises(ResourceError, match="Read-only file system"):
        cache.check_cache_settings()
    with pytest.raises(ResourceError, match=f"HYPERSEG_CACHE={tmp_path / 'cache'}"):
        cache.cached_onnx(_tiny_conv(), (32, 32), "fp32")


def test_a_cache_path_that_is_a_file_is_refused_naming_the_variable(tmp_path, monkeypatch):
    taken = _put(tmp_path / "not-a-folder", 10, OLD)
    monkeypatch.setenv("HYPERSEG_CACHE", str(taken))
    with pytest.raises(HypersegError, match=f"HYPERSEG_CACHE={taken} is not a folder"):
        cache.check_cache_settings()
    monkeypatch.setenv("HYPERSEG_CACHE", str(taken / "below"))
    with pytest.raises(HypersegError, match=f"HYPERSEG_CACHE={taken / 'below'}"):
        cache.check_cache_settings()
    assert taken.read_bytes() == b"x" * 10


def _run_child(fate):
    """subprocess.run for the conversion child, with the child meeting ``fate`` first."""
    real_run = subprocess.run

    def run(args, *, input=None, capture_output=False, **kwargs):
        if fate == "killed":  # the real child, killed as the out-of-memory killer kills
            child = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            child.kill()
            out, err = child.communicate(input)
            return subprocess.CompletedProcess(args, child.returncode, out, err)
        return real_run([sys.executable, "-c", "import sys; print('MemoryError', file=sys.stderr); sys.exit(3)"],
                        input=input, capture_output=capture_output, **kwargs)

    return run


@pytest.mark.parametrize("fate, words", [("killed", "killed by SIGKILL (signal 9)"),
                                         ("exits", "exited with code 3 without a result (MemoryError)")])
def test_a_conversion_process_that_dies_is_a_resource_error(fate, words, tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERSEG_CACHE", str(tmp_path))
    monkeypatch.setattr(cache.subprocess, "run", _run_child(fate))
    cache.isolate_conversions(True)
    try:
        with pytest.raises(ResourceError) as err:
            cache.cached_onnx(_tiny_conv(), (32, 32), "fp32")
    finally:
        cache.isolate_conversions(False)
    assert words in str(err.value) and "32x32" in str(err.value) and "\n" not in str(err.value)
    assert not any(p.suffix == ".onnx" for p in tmp_path.iterdir())


@pytest.mark.parametrize("where", ["temporary folder", "elsewhere"])
def test_int8_calibration_that_cannot_write_its_temporary_files_is_a_resource_error(where, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    quantization = pytest.importorskip("onnxruntime.quantization")
    from PIL import Image

    from hyperseg.runtime.quantize import quantize_onnx

    model = _tiny_onnx(tmp_path / "tiny.onnx")
    (tmp_path / "calibration").mkdir()
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(tmp_path / "calibration" / "a.png")
    # a write that fails without naming a file (as a full disk does), or one that names a file outside
    # the temporary folder: only the first is the temporary folder's fault
    failure = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) if where == "temporary folder" else \
        PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/calibration-images/a.png")

    def pre_process(*args, **kwargs):
        raise failure

    monkeypatch.setattr(quantization, "quant_pre_process", pre_process)
    if where == "temporary folder":
        with pytest.raises(ResourceError, match="int8 calibration cannot write its temporary files in .*TMPDIR"):
            quantize_onnx(model, tmp_path / "int8.onnx", tmp_path / "calibration")
    else:
        with pytest.raises(PermissionError) as err:
            quantize_onnx(model, tmp_path / "int8.onnx", tmp_path / "calibration")
        assert not isinstance(err.value, ResourceError)
    assert not (tmp_path / "int8.onnx").exists()


# ------------------------------------------------------------------- settings, checked at start

def test_a_bad_limit_is_refused_before_converting(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERSEG_CACHE", str(tmp_path))
    monkeypatch.setenv("HYPERSEG_CACHE_MAX_MB", "lots")

    def must_not_convert(*args):
        raise AssertionError("converted before the limit was checked")

    monkeypatch.setattr(cache, "_make", must_not_convert)
    with pytest.raises(HypersegError, match="HYPERSEG_CACHE_MAX_MB='lots'"):
        cache.cached_onnx(_tiny_conv(), (32, 32), "fp32")


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_converting_runtime_refuses_bad_settings_when_it_is_created(runtime, tmp_path, monkeypatch):
    pytest.importorskip(runtime)
    pytest.importorskip("onnxscript")
    from hyperseg.runtime import load_runtime

    monkeypatch.setenv("HYPERSEG_CACHE", str(tmp_path))
    monkeypatch.setenv("HYPERSEG_CACHE_MAX_MB", "-1")
    with pytest.raises(HypersegError, match="HYPERSEG_CACHE_MAX_MB='-1'"):
        load_runtime(_tiny_conv(), runtime=runtime)
    monkeypatch.delenv("HYPERSEG_CACHE_MAX_MB")
    monkeypatch.setenv("HYPERSEG_CACHE", str(_put(tmp_path / "file", 1, OLD)))
    with pytest.raises(HypersegError, match="is not a folder"):
        load_runtime(_tiny_conv(), runtime=runtime)


def test_predict_stops_at_a_bad_limit_with_exit_2_before_converting(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from hyperseg.cli import main as cli_main

    checkpoint = hyperseg.save_model(_tiny_hyperseg(), tmp_path / "tiny.pt")
    root = tmp_path / "cache"
    monkeypatch.setenv("HYPERSEG_CACHE", str(root))
    monkeypatch.setenv("HYPERSEG_CACHE_MAX_MB", "abc")
    code = cli_main(["predict", str(SAMPLE), "-m", str(checkpoint), "--runtime", "onnxruntime",
                     "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "HYPERSEG_CACHE_MAX_MB='abc'" in err[0] and "Traceback" not in err[0]
    assert not root.exists() or not any(root.iterdir())  # nothing was converted


# ------------------------------------------------------------------- onnxruntime's own log

def test_a_file_onnxruntime_cannot_load_is_reported_in_one_line_only(tmp_path, capfd):
    pytest.importorskip("onnxruntime")
    from hyperseg.cli import main as cli_main

    bad = _tiny_onnx(tmp_path / "bad.onnx", auto_pad="BOGUS")  # reads as ONNX; onnxruntime's Conv refuses it
    capfd.readouterr()
    code = cli_main(["predict", str(SAMPLE), "-m", str(bad), "--runtime", "onnxruntime", "--out", str(tmp_path / "out")])
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"hyperseg predict: error: {bad}: onnxruntime cannot load it") and "\x1b[" not in err
