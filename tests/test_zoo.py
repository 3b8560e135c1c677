"""The zoo: verified downloads over real HTTP on 127.0.0.1, the cache, publishing and loading."""
import hashlib
import json
import multiprocessing
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from sezoo import zoo
from sezoo.cli import main as sezoo_main
from sezoo.metrics.cost import count_params, deployable_bytes, model_bit_widths, static_macs_per_second
from sezoo.nn.quant import quantization_state
from sezoo.models import create_model
from sezoo.zoo import registry
from sezoo.zoo.download import ZooDownloadError, fetch, sha256_of

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    hits: dict = {}
    slow = 0.0

    def log_message(self, *args):
        pass

    def do_GET(self):
        _Handler.hits[self.path] = _Handler.hits.get(self.path, 0) + 1
        if self.path == "/missing.bin":
            self.send_error(404)
            return
        body = b"x" * len(PAYLOAD) if self.path == "/bad.bin" else PAYLOAD
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path == "/cut.bin":  # promise everything, send half, hang up
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        for i in range(0, len(body), 8192):
            self.wfile.write(body[i : i + 8192])
            time.sleep(_Handler.slow)


@pytest.fixture
def server():
    _Handler.hits, _Handler.slow = {}, 0.0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_good_download_is_cached_and_reused(server, tmp_path):
    dest = tmp_path / "cache" / "f.bin"
    assert fetch(f"{server}/good.bin", dest, SHA, len(PAYLOAD)).read_bytes() == PAYLOAD
    fetch(f"{server}/good.bin", dest, SHA, len(PAYLOAD))
    assert _Handler.hits["/good.bin"] == 1
    dest.write_bytes(b"damaged on disk")  # a damaged cached file is fetched again, never used
    assert fetch(f"{server}/good.bin", dest, SHA).read_bytes() == PAYLOAD and _Handler.hits["/good.bin"] == 2


@pytest.mark.parametrize("path, message", [
    ("/bad.bin", "does not match the registry"),
    ("/cut.bin", "received 51200 of 102400 bytes|broke off"),
    ("/missing.bin", "HTTP 404"),
])
def test_bad_downloads_never_land_in_the_cache(server, tmp_path, path, message):
    dest = tmp_path / "cache" / "f.bin"
    with pytest.raises(ZooDownloadError, match=message):
        fetch(f"{server}{path}", dest, SHA, len(PAYLOAD))
    assert _leftovers(dest.parent) == []


def _fetch_in_process(url, dest, queue):
    try:
        queue.put(sha256_of(fetch(url, Path(dest), SHA, len(PAYLOAD))))
    except Exception as err:  # report to the parent rather than die silently
        queue.put(repr(err))


def test_two_processes_download_once(server, tmp_path):
    _Handler.slow = 0.02  # ~0.25 s per download: the two requests overlap
    queue = multiprocessing.get_context("fork").Queue()
    dest = tmp_path / "cache" / "f.bin"
    procs = [multiprocessing.get_context("fork").Process(target=_fetch_in_process, args=(f"{server}/good.bin", dest, queue))
             for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [queue.get(timeout=5) for _ in procs] == [SHA, SHA]
    assert _Handler.hits["/good.bin"] == 1 and _leftovers(dest.parent) == ["f.bin"]


def test_file_and_hf_schemes(tmp_path, monkeypatch):
    source = tmp_path / "src.bin"
    source.write_bytes(PAYLOAD)
    assert fetch(source.as_uri(), tmp_path / "c" / "a.bin", SHA).read_bytes() == PAYLOAD
    import huggingface_hub
    calls = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda repo_id, filename: calls.append((repo_id, filename)) or str(source))
    assert fetch("hf://org/repo/w/a.bin", tmp_path / "c" / "b.bin", SHA).read_bytes() == PAYLOAD
    assert calls == [("org/repo", "w/a.bin")]


# The tiny run's own command names pytest's temporary folders, which publish refuses (tested below).
TINY_COMMAND = "python recipes/dyncp/train.py stage=dense model.channels=16"


@pytest.fixture
def published(trained, tmp_path, monkeypatch):
    """The tiny trained run published twice (two names, one weight file) into a private zoo."""
    run_dir, _, _ = trained
    release, package_registry = tmp_path / "release", tmp_path / "registry.json"
    for name, parent in (("dyncp/tiny-a", []), ("dyncp/tiny-b", ["--parent", "dyncp/tiny-a"])):
        assert sezoo_main(["zoo", "publish", str(run_dir), "--name", name, "--to", str(release),
                           "--registry", str(package_registry), *parent, "--command", TINY_COMMAND]) == 0
    monkeypatch.setattr(registry, "REGISTRY", package_registry)
    monkeypatch.setenv("SEZOO_ZOO_URL", release.as_uri())
    monkeypatch.setenv("SEZOO_CACHE", str(tmp_path / "cache"))
    return run_dir, release


def test_publish_writes_weights_card_entry_once(published, capsys):
    run_dir, release = published
    results = json.loads((run_dir / "results.json").read_text())
    assert sorted(p.name for p in release.glob("*.safetensors")) == ["dyncp-tiny-a.safetensors"]
    entries = {e["name"]: e for e in json.loads((release / "registry.json").read_text())["models"]}
    assert entries["dyncp/tiny-b"]["files"][0] == entries["dyncp/tiny-a"]["files"][0]  # one weight file
    sidecar = json.loads((release / "dyncp-tiny-b.json").read_text())
    assert sidecar["arch"] == "convfsenet" and sidecar["weights"]["name"] == "dyncp-tiny-a.safetensors"
    assert entries["dyncp/tiny-a"]["metrics"] == results["metrics"]
    assert "ICASSP 2025" in entries["dyncp/tiny-a"]["paper"]["citation"]  # the recipe's declaration, via results.json
    assert entries["dyncp/tiny-b"]["parent"] == "dyncp/tiny-a" and "parent" not in entries["dyncp/tiny-a"]
    card = (release / "dyncp-tiny-a.md").read_text()
    assert f"{results['metrics']['pesq_wb']:.3f}" in card and "train.py" in card
    assert "lineage: `dyncp/tiny-b` <- `dyncp/tiny-a`" in (release / "dyncp-tiny-b.md").read_text()
    sidecar_a = json.loads((release / "dyncp-tiny-a.json").read_text())
    latency = create_model("convfsenet", **sidecar_a["kwargs"]).latency_ms  # the recorded architecture's
    assert entries["dyncp/tiny-a"]["latency_ms"] == pytest.approx(latency) and latency >= 32.0
    assert f"algorithmic latency: {latency:g} ms" in card
    assert sezoo_main(["zoo", "list"]) == 0
    assert f"{latency:.0f} ms" in capsys.readouterr().out
    assert sezoo_main(["zoo", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {e["name"] for e in listed} == {"dyncp/tiny-a", "dyncp/tiny-b"}
    assert all({"name", "recipe", "metrics", "cost"} <= set(e) for e in listed)


def test_load_by_name_then_offline(published, tiny_corpus, tmp_path, monkeypatch):
    run_dir, _ = published
    model = zoo.load("dyncp/tiny-a")
    assert not model.training and count_params(model) == model.cost["params"]
    wave = torch.randn(24000) * 0.1
    assert model.enhance(wave, 48000).shape == (24000,)
    monkeypatch.setenv("SEZOO_ZOO_URL", "http://127.0.0.1:9/unreachable")  # cached: no network needed
    zoo.load("dyncp/tiny-a")
    with pytest.raises(ZooDownloadError, match="broke off"):  # tiny-b's own JSON was never fetched
        zoo.load("dyncp/tiny-b")
    out = tmp_path / "e.json"
    test = tiny_corpus / "mini" / "test"
    assert sezoo_main(["evaluate", "--model", "dyncp/tiny-a", "--noisy", str(test / "noisy"),
                       "--clean", str(test / "clean"), "--json", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["model"] == "dyncp/tiny-a"


def test_lineage_names_existing_entries_only(published, capsys):
    run_dir, release = published
    assert zoo.entry_lineage("dyncp/tiny-b") == ["dyncp/tiny-b", "dyncp/tiny-a"]
    assert sezoo_main(["zoo", "publish", str(run_dir), "--name", "dyncp/tiny-c", "--to", str(release),
                       "--parent", "dyncp/nothing", "--command", TINY_COMMAND]) == 2
    assert "--parent 'dyncp/nothing' is not in" in capsys.readouterr().err
    assert not (release / "dyncp-tiny-c.md").exists()


def test_a_command_naming_machine_paths_is_not_published(published, capsys):
    run_dir, release = published
    assert sezoo_main(["zoo", "publish", str(run_dir), "--name", "dyncp/tiny-d", "--to", str(release)]) == 2
    assert "names this machine's folders" in capsys.readouterr().err  # the recorded one: pytest's tmp folders
    assert sezoo_main(["zoo", "publish", str(run_dir), "--name", "dyncp/tiny-d", "--to", str(release),
                       "--command", "python recipes/dyncp/train.py init_from=/home/me/runs/x"]) == 2
    assert "/home/me/runs/x" in capsys.readouterr().err


def test_zoo_list_stays_light():
    """Listing the zoo imports neither the training stack nor torch."""
    import subprocess
    import sys

    code = ("import sys; from sezoo.cli import main; main(['zoo', 'list']); "
            "print('HEAVY', sorted(m for m in ('torch', 'lightning', 'torchaudio', 'requests') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "dyncp/mini2-causal-dense" in out and "HEAVY []" in out


def test_unknown_name_suggests(published, capsys):
    assert sezoo_main(["zoo", "info", "dyncp/tiny-aa"]) == 2
    assert "Did you mean dyncp/tiny-a" in capsys.readouterr().err


def test_hf_publish_uploads_weights_card_and_registry(trained, monkeypatch):
    import huggingface_hub
    uploads = []

    class FakeApi:
        def upload_file(self, path_or_fileobj, path_in_repo, repo_id):
            uploads.append((repo_id, path_in_repo))

        def hf_hub_download(self, repo_id, filename, local_dir):
            raise huggingface_hub.utils.EntryNotFoundError("new repo")

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    zoo.publish(trained[0], "dyncp/tiny-hf", "hf://org/zoo", command=TINY_COMMAND)
    assert uploads == [("org/zoo", "dyncp-tiny-hf.safetensors"), ("org/zoo", "dyncp-tiny-hf.json"),
                       ("org/zoo", "dyncp-tiny-hf.md"), ("org/zoo", "registry.json")]


def test_shipped_registry_matches_reality():
    """Every shipped entry loads from the release folder with the params, bytes and MACs it claims."""
    entries = registry.read_registry()
    assert {"dyncp/mini2-causal-dense", "tinylstm/mini2-pruned-int8"} <= {e.name for e in entries}
    for entry in entries:
        model = zoo.load(entry.name)
        cost = entry.cost
        assert count_params(model) == cost["params"], entry.name
        assert deployable_bytes(model, model_bit_widths(model)).total == cost["model_bytes"], entry.name
        static = cost.get("max_macs_per_second", cost["macs_per_second"])
        assert static_macs_per_second(model, entry.sample_rate) == static, entry.name
        assert entry.latency_ms == pytest.approx(model.latency_ms, abs=1e-3), entry.name  # stored to the microsecond
        if entry.utilization:  # executed MACs follow from the measured utilization
            assert cost["macs_per_second"] < static
    assert zoo.entry_lineage("tinylstm/mini2-pruned-int8-skip") == [
        "tinylstm/mini2-pruned-int8-skip", "tinylstm/mini2-pruned-int8", "tinylstm/mini2-pruned", "tinylstm/mini2-fp32"]
    assert registry.read_registry(registry.RELEASE_DIR / "registry.json") == entries


def test_committed_json_and_commands_name_no_machine_paths():
    """Published commands and committed JSON are read on other machines: no absolute folders in them."""
    import subprocess

    from sezoo.zoo.publish import machine_paths

    repo = Path(__file__).resolve().parents[1]
    for entry in registry.read_registry():
        assert not machine_paths(entry.training.command), (entry.name, entry.training.command)
    tracked = subprocess.run(["git", "ls-files", "*.json"], cwd=repo, capture_output=True, text=True).stdout.split()
    assert tracked, "git ls-files found no JSON"

    def strings(value):
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)

    for name in tracked:
        found = [s for s in strings(json.loads((repo / name).read_text())) if machine_paths(s)]
        assert not found, (name, found[:3])


def test_retire_removes_entries_and_unshared_files_and_keeps_lineage_whole(published, capsys):
    run_dir, release = published
    package_registry = registry.REGISTRY
    # tiny-b names tiny-a as its parent: retiring the parent alone would orphan it
    assert sezoo_main(["zoo", "retire", "dyncp/tiny-a", "--to", str(release)]) == 2
    assert "still the parent of dyncp/tiny-b" in capsys.readouterr().err
    assert sezoo_main(["zoo", "retire", "dyncp/tiny-x", "--to", str(release)]) == 2
    assert "dyncp/tiny-x" in capsys.readouterr().err
    # the child goes: its card and sidecar with it, the weight file stays (tiny-a shares it)
    assert sezoo_main(["zoo", "retire", "dyncp/tiny-b", "--to", str(release), "--registry", str(package_registry)]) == 0
    assert not (release / "dyncp-tiny-b.md").exists() and not (release / "dyncp-tiny-b.json").exists()
    assert (release / "dyncp-tiny-a.safetensors").exists()
    assert [e.name for e in registry.read_registry(release / "registry.json")] == ["dyncp/tiny-a"]
    assert [e.name for e in registry.read_registry(package_registry)] == ["dyncp/tiny-a"]
    assert sezoo_main(["zoo", "retire", "dyncp/tiny-a", "--to", str(release)]) == 0
    assert not list(release.glob("dyncp-tiny-a.*")) and registry.read_registry(release / "registry.json") == []


@pytest.mark.parametrize("name", [e.name for e in registry.read_registry()])
def test_every_zoo_model_exports_a_streaming_onnx_step_that_matches_pytorch(name, tmp_path):
    """Each shipped model, as a user gets it: its exported step streamed by ONNX Runtime gives what its
    PyTorch step gives (on speech-like audio, chunks that do not align with its hop)."""
    import numpy as np

    from conftest import speech_like
    from sezoo.streaming import export_onnx, open_streamer, stream_enhance

    model = zoo.load(name)
    rng = np.random.default_rng(0)
    clean = speech_like(rng, 0.6)
    noisy = (clean + 0.05 * rng.standard_normal(clean.size)).astype(np.float32)
    with torch.inference_mode():
        expected = stream_enhance(open_streamer(model), noisy, 333)
    streamed = stream_enhance(open_streamer(export_onnx(model, tmp_path), "onnx"), noisy, 333)
    assert streamed.shape == noisy.shape
    # Products of 8-bit activations and 8-bit weights, and their sums, are exact in float32, so any summation
    # order gives the same bits. With every activation at 16 bits they are not: ONNX Runtime's order flips
    # a rounding to a neighbouring 16-bit step here and there (measured: 4 output steps at most).
    activations = [site["bits"] for site in quantization_state(model).values() if site["kind"] == "activation"]
    tolerance = 2e-4 if activations and min(activations) > 8 else 2e-5
    np.testing.assert_allclose(streamed, expected, atol=tolerance * max(1.0, float(np.abs(expected).max())))


def test_repack_stores_a_float_published_qat_entry_as_codes_with_the_same_output(published, capsys):
    """A QAT entry published as float32 (before exports packed integer codes) is rewritten at its
    deployable width: smaller, the hash the registry names, and the model a user loads unchanged."""
    from dataclasses import replace

    from safetensors.torch import save_file

    from sezoo.callbacks import QuantizationAwareTraining
    from sezoo.zoo.entry import ZooFile

    _, release = published
    kwargs = {"n_fft": 128, "hop": 64, "hidden": [24, 16]}
    model = create_model("tinylstm", **kwargs).train()
    QuantizationAwareTraining({"*.mask_quant": 16, "*": 8}).attach(model)
    with torch.no_grad():
        model(torch.randn(2, 4000))  # observe activation ranges
    model.eval()
    path = release / "tinylstm-tiny-int8.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))  # float32, as before 0.3
    entries = registry.read_registry(release / "registry.json")
    entry = replace(entries[0], name="tinylstm/tiny-int8", recipe="tinylstm", arch="tinylstm",
                    kwargs=create_model("tinylstm", **kwargs).kwargs, parent=None,
                    quantization=quantization_state(model),
                    files=(ZooFile(path.name, sha256_of(path), path.stat().st_size),))
    registry.write_registry(entries + [entry], release / "registry.json")
    registry.write_registry(registry.read_registry(registry.REGISTRY) + [entry], registry.REGISTRY)
    probe = torch.randn(1, 8000)
    with torch.no_grad():
        expected = zoo.load("tinylstm/tiny-int8")(probe)
    float_bytes = path.stat().st_size

    assert sezoo_main(["zoo", "repack", "tinylstm/tiny-int8", "--to", str(release),
                       "--registry", str(registry.REGISTRY)]) == 0
    assert path.name in capsys.readouterr().out
    assert path.stat().st_size < float_bytes / 2  # 8-bit codes and a scale per tensor, not float32
    repacked = {e.name: e for e in registry.read_registry(registry.REGISTRY)}["tinylstm/tiny-int8"]
    assert repacked.weights.sha256 == sha256_of(path) and repacked.weights.size == path.stat().st_size
    assert registry.read_registry(release / "registry.json")[-1] == repacked
    assert json.loads((release / "tinylstm-tiny-int8.json").read_text())["weights"]["sha256"] == sha256_of(path)
    with torch.no_grad():  # a fresh cache: the download checks the new hash; the output is the same
        assert torch.equal(zoo.load("tinylstm/tiny-int8")(probe), expected)
    # a float model has nothing to repack: refused, with the reason
    assert sezoo_main(["zoo", "repack", "dyncp/tiny-a", "--to", str(release)]) == 2
    assert "not a QAT model" in capsys.readouterr().err
