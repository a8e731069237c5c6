"""Models: every checkpoint format loads to identical outputs; nothing unsafe or half-loaded;
the address follows bytes, not names; QuickGELU matters."""

from __future__ import annotations

import io
import os
import zipfile

import pytest
import torch
from conftest import TINY_ARCH, tiny_state_dict
from rsm_eval import models
from rsm_eval.config import Model
from rsm_eval.errors import RsmEvalError


def tiny(weights=None, **kw) -> Model:
    return Model(name="t", arch=str(TINY_ARCH), weights=weights and str(weights), **kw)


@pytest.fixture(scope="module")
def reference():
    state = tiny_state_dict(21)
    torch.manual_seed(0)
    images = torch.randn(3, 3, 64, 64)
    tokens = torch.randint(1, 400, (4, 77))
    tokens[:, 10] = 49407  # end-of-text token: pooling position
    return state, images, tokens


def outputs(loaded, images, tokens):
    with torch.no_grad():
        return loaded.model.encode_image(images), loaded.model.encode_text(tokens)


def save_formats(state, tmp_path):
    from safetensors.torch import save_file

    paths = {}
    paths["raw"] = tmp_path / "raw.pt"
    torch.save(state, paths["raw"])
    # open_clip training checkpoint: DDP 'module.' prefixes and optimizer state.
    paths["training"] = tmp_path / "epoch_3.pt"
    torch.save(
        {
            "epoch": 3,
            "name": "run",
            "state_dict": {f"module.{k}": v for k, v in state.items()},
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "params": [0, 1]}]},
        },
        paths["training"],
    )
    paths["safetensors"] = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(paths["safetensors"]))
    paths["zip"] = tmp_path / "release.zip"
    buf = io.BytesIO()
    torch.save(state, buf)
    with zipfile.ZipFile(paths["zip"], "w") as zf:
        zf.writestr("release/model.pt", buf.getvalue())
    return paths


def test_every_format_loads_to_identical_outputs(reference, tmp_path):
    state, images, tokens = reference
    paths = save_formats(state, tmp_path)
    results = {k: outputs(models.build(tiny(p)), images, tokens) for k, p in paths.items()}
    img0, txt0 = results["raw"]
    for kind, (img, txt) in results.items():
        assert torch.equal(img, img0), kind
        assert torch.equal(txt, txt0), kind


def test_quickgelu_checkpoint_loaded_as_gelu_changes_embeddings(reference, tmp_path):
    state, images, tokens = reference
    torch.save(state, tmp_path / "w.pt")
    quick = models.build(tiny(tmp_path / "w.pt"))  # the tiny config says quick_gelu: true
    assert quick.quick_gelu
    cfg = TINY_ARCH.read_text().replace('"quick_gelu": true', '"quick_gelu": false')
    gelu_arch = tmp_path / "tiny-gelu.json"
    gelu_arch.write_text(cfg)
    gelu = models.build(Model(name="g", arch=str(gelu_arch), weights=str(tmp_path / "w.pt")))
    assert not gelu.quick_gelu
    qi, qt = outputs(quick, images, tokens)
    gi, gt = outputs(gelu, images, tokens)
    # Same weights load silently into both; only the activation differs, and so do the numbers.
    assert not torch.allclose(qi, gi, atol=1e-4)
    assert not torch.allclose(qt, gt, atol=1e-4)
    # The registry's answer is part of the address.
    assert models.address(tiny(tmp_path / "w.pt")) != models.address(
        Model(name="g", arch=str(gelu_arch), weights=str(tmp_path / "w.pt"))
    )


def test_force_quick_gelu_changes_the_address(tmp_path):
    a = Model(name="a", arch="ViT-B-32", pretrained="openai")
    b = Model(name="a", arch="ViT-B-32", pretrained="openai", force_quick_gelu=True)
    assert models.address(a) != models.address(b)


def test_address_follows_bytes_not_names(reference, tmp_path):
    state, _, _ = reference
    torch.save(state, tmp_path / "a.pt")
    first = models.address(tiny(tmp_path / "a.pt"))
    os.rename(tmp_path / "a.pt", tmp_path / "renamed.pt")
    assert (
        models.address(
            Model(name="other", arch=str(TINY_ARCH), weights=str(tmp_path / "renamed.pt"))
        )
        == first
    )
    torch.save(tiny_state_dict(22), tmp_path / "renamed.pt")
    assert models.address(tiny(tmp_path / "renamed.pt")) != first


def test_wrong_architecture_lists_keys(reference, tmp_path):
    state, _, _ = reference
    bad = dict(state)
    bad.pop("text_projection")
    bad["extra.weight"] = torch.zeros(2)
    bad["ln_final.weight"] = torch.zeros(32)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(RsmEvalError) as err:
        models.build(tiny(tmp_path / "bad.pt"))
    msg = str(err.value)
    assert "missing keys: text_projection" in msg
    assert "unexpected keys: extra.weight" in msg
    assert "ln_final.weight: checkpoint (32,) vs model (64,)" in msg


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/rsm-eval-pwned",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    torch.save({"state_dict": {"x": Evil()}}, tmp_path / "evil.pt")
    with pytest.raises(RsmEvalError, match="needs arbitrary code to unpickle and was refused"):
        models.read_state_dict(tmp_path / "evil.pt")
    assert not os.path.exists("/tmp/rsm-eval-pwned")


def test_torchscript_archive_is_refused(tmp_path):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, x):
            return self.lin(x)

    torch.jit.save(torch.jit.script(Net()), tmp_path / "RemoteCLIP-ViT-B-32.pt")
    with pytest.raises(RsmEvalError, match="TorchScript archive"):
        models.read_state_dict(tmp_path / "RemoteCLIP-ViT-B-32.pt")


def test_truncated_checkpoint(reference, tmp_path):
    state, _, _ = reference
    torch.save(state, tmp_path / "w.pt")
    data = (tmp_path / "w.pt").read_bytes()
    (tmp_path / "w.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(RsmEvalError, match="w.pt"):
        models.read_state_dict(tmp_path / "w.pt")


def test_missing_checkpoint_named_with_key(tmp_path):
    with pytest.raises(RsmEvalError, match=r"models\.t\.weights: checkpoint .*nope.pt not found"):
        models.address(tiny(tmp_path / "nope.pt"))


def test_random_init_is_seeded():
    a = models.build(Model(name="a", arch=str(TINY_ARCH), random=3)).model.state_dict()
    b = models.build(Model(name="b", arch=str(TINY_ARCH), random=3)).model.state_dict()
    c = models.build(Model(name="c", arch=str(TINY_ARCH), random=4)).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def farslip_style_checkpoint(state, path):
    """FarSLIP's released .pt layout: an open_clip training checkpoint, DDP prefixes."""
    torch.save(
        {
            "epoch": 10,
            "name": "farslip",
            "state_dict": {f"module.{k}": v for k, v in state.items()},
        },
        path,
    )
    return path


def test_farslip_style_checkpoint_refuses_gelu_where_the_registry_says_quickgelu(
    reference, tmp_path
):
    from rsm_eval import config

    state, images, tokens = reference
    ckpt = farslip_style_checkpoint(state, tmp_path / "FarSLIP1_ViT-B-16.pt")
    datasets = {"d": {"format": "karpathy-json", "annotations": "a.json", "images": "i"}}

    def model(**entry):
        cfg = config.load({"datasets": datasets, "models": {"far": entry}})
        return cfg.models["far"]

    # The registry entry, with the user's local file and the QuickGELU flag dropped.
    dropped = model(registry="farslip1-vit-b-16", weights=str(ckpt), force_quick_gelu=False)
    assert dropped.activation == "quick_gelu" and dropped.arch == "ViT-B-16"
    with pytest.raises(RsmEvalError, match="activation 'quick_gelu'.*builds 'gelu'.*force_quick"):
        models.build(dropped)

    # The same check on a small architecture, end to end: a GELU config is refused; forcing
    # QuickGELU builds the model the checkpoint was trained as.
    gelu_arch = tmp_path / "tiny-gelu.json"
    gelu_arch.write_text(TINY_ARCH.read_text().replace('"quick_gelu": true', '"quick_gelu": false'))
    entry = {"arch": str(gelu_arch), "weights": str(ckpt), "activation": "quick_gelu"}
    with pytest.raises(RsmEvalError, match="models.far: the weights were trained with"):
        models.build(model(**entry))
    forced = models.build(model(**entry, force_quick_gelu=True))
    assert forced.activation == "quick_gelu"
    ref = outputs(models.build(tiny(ckpt)), images, tokens)
    for got, want in zip(outputs(forced, images, tokens), ref, strict=True):
        assert torch.equal(got, want)


def test_readme_model_table_lists_every_registry_model():
    from conftest import ROOT
    from rsm_eval import config

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [n for n in config.registry() if f"| `{n}` |" not in readme]
    assert not missing, f"README model table lacks {missing}"
