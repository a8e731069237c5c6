"""The transformers backend: randomly initialised CLIP and SigLIP models built from small
configs (no download), saved with save_pretrained and loaded from there, give the features of a
direct transformers forward pass, and a SigLIP model runs through retrieval, classification
and the seed command line with the numbers an independent NumPy computation gives."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import snakemake_env
from PIL import Image
from rsm_eval import embeddings, models
from rsm_eval.config import Model
from rsm_eval.errors import RsmEvalError

transformers = pytest.importorskip("transformers")

CORPUS = [
    "many buildings are around a green park",
    "a river runs through the farmland",
    "an airport with two grey runways",
    "some cars are parked near a storage tank",
    "dense residential area with roads",
    "a beach next to the blue sea",
    "the forest is dense and green",
    "a harbor with several boats",
]
TEXTS = ["A river runs through the farmland.", "an airport", "dense residential area near a park"]
SIGLIP_LENGTH = 16  # the tiny model's positions (Git-RSCLIP: 64)


def tower(**kw):
    return dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, **kw
    )


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory) -> Path:
    return save_tiny_siglip(tmp_path_factory.mktemp("siglip"))


def save_tiny_siglip(out: Path) -> Path:
    """A SigLIP model with a real SentencePiece tokenizer, trained here on a few captions."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20), model_writer=buf, vocab_size=48, minloglevel=2
    )
    (out / "spiece.model").write_bytes(buf.getvalue())
    tok = transformers.SiglipTokenizer(vocab_file=str(out / "spiece.model"))
    tok.save_pretrained(out)
    cfg = transformers.SiglipConfig(
        text_config=tower(
            vocab_size=len(tok), max_position_embeddings=SIGLIP_LENGTH, projection_size=32
        ),
        vision_config=tower(image_size=32, patch_size=8),
    )
    torch.manual_seed(0)
    transformers.SiglipModel(cfg).save_pretrained(out)
    transformers.SiglipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    """A CLIP model with CLIP's own BPE vocabulary (open_clip's copy of it)."""
    from open_clip.tokenizer import SimpleTokenizer

    out = tmp_path_factory.mktemp("clip")
    bpe = SimpleTokenizer()
    merges = [pair for pair, _ in sorted(bpe.bpe_ranks.items(), key=lambda kv: kv[1])]
    special = {"bos_token": "<start_of_text>", "eos_token": "<end_of_text>"}
    tok = transformers.CLIPTokenizer(
        vocab=bpe.encoder, merges=merges, pad_token="<end_of_text>", unk_token="<end_of_text>",
        **special,
    )  # fmt: skip
    tok.save_pretrained(out)
    cfg = transformers.CLIPConfig(
        text_config=tower(vocab_size=len(tok), max_position_embeddings=77),
        vision_config=tower(image_size=32, patch_size=8),
        projection_dim=24,
    )
    torch.manual_seed(1)
    transformers.CLIPModel(cfg).save_pretrained(out)
    transformers.CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(out)
    return out


def hf_model(family: str, path: Path, **kw) -> Model:
    return Model(
        name=f"tiny-{family}", arch=family, backend="transformers", weights=str(path), **kw
    )


def images(n: int = 3, size: int = 48) -> list[Image.Image]:
    rng = np.random.default_rng(5)
    return [
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)
    ]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def direct(family: str, path: Path, pil: list[Image.Image], texts: list[str], length: int):
    """Features as the authors' code computes them: AutoModel, the PIL image processor, the
    tokenizer padded to `length`; get_*_features(...).pooler_output (transformers 5)."""
    net = transformers.AutoModel.from_pretrained(path).eval()
    proc = getattr(transformers, f"{'Siglip' if family == 'siglip' else 'CLIP'}ImageProcessorPil")
    pixels = proc.from_pretrained(path)(images=pil, return_tensors="pt")["pixel_values"]
    tok = transformers.AutoTokenizer.from_pretrained(path)
    enc = tok(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    ids = enc["input_ids"]
    with torch.no_grad():
        img = net.get_image_features(pixel_values=pixels).pooler_output
        txt = net.get_text_features(input_ids=ids).pooler_output
    return pixels, ids, img.numpy(), txt.numpy()


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_features_equal_a_direct_transformers_forward_pass(family, request, tmp_path):
    path = request.getfixturevalue(f"{family}_dir")
    length = 77 if family == "clip" else SIGLIP_LENGTH
    pil = images()
    pixels, ids, img_ref, txt_ref = direct(family, path, pil, TEXTS, length)

    loaded = models.build(hf_model(family, path))
    assert loaded.backend == "transformers" and loaded.dim == (24 if family == "clip" else 32)
    ours_pixels = torch.stack([loaded.preprocess(im) for im in pil])
    torch.testing.assert_close(ours_pixels, pixels, atol=1e-5, rtol=0)
    assert torch.equal(loaded.tokenize(TEXTS), ids)
    with torch.no_grad():
        np.testing.assert_allclose(loaded.encode_image(ours_pixels).numpy(), img_ref, atol=1e-5)
        np.testing.assert_allclose(loaded.encode_text(ids).numpy(), txt_ref, atol=1e-5)

    # Through the embedding stage and its feature store: L2-normalised, the same directions.
    feats = embeddings.embed_texts(hf_model(family, path), TEXTS, cache_dir=tmp_path, device="cpu")
    np.testing.assert_allclose(feats, unit(txt_ref), atol=1e-5)
    files = []
    for i, im in enumerate(pil):
        files.append(tmp_path / f"im{i}.png")
        im.save(files[-1])
    feats = embeddings.embed_image_files(hf_model(family, path), files, cache_dir=tmp_path)
    np.testing.assert_allclose(feats, unit(img_ref), atol=1e-5)


def test_siglip_attention_mask_would_change_text_features(siglip_dir):
    """Why the backend passes token ids only: transformers 5's SiglipTokenizer also returns an
    attention_mask, and SigLIP (bidirectional, pooling the last, padding position) gives other
    features with it than the unmasked ones it was trained to produce."""
    tok = transformers.AutoTokenizer.from_pretrained(siglip_dir)
    enc = tok(
        TEXTS, padding="max_length", max_length=SIGLIP_LENGTH, truncation=True, return_tensors="pt"
    )
    assert "attention_mask" in enc
    net = transformers.AutoModel.from_pretrained(siglip_dir).eval()
    with torch.no_grad():
        masked = net.get_text_features(**enc).pooler_output
        plain = net.get_text_features(input_ids=enc["input_ids"]).pooler_output
        ours = models.build(hf_model("siglip", siglip_dir)).encode_text(enc["input_ids"])
    assert not torch.allclose(masked, plain, atol=1e-3)
    torch.testing.assert_close(ours, plain)


def test_preprocessing_is_data(siglip_dir):
    """Config overrides the repo's preprocessor config; text padding and prefix likewise."""
    loaded = models.build(
        hf_model(
            "siglip",
            siglip_dir,
            preprocess={"size": 32, "resize": "shortest", "interpolation": "bilinear"},
            text={"prefix": "a satellite image. ", "max_length": 12},
        )
    )
    assert loaded.image_spec["crop"] == "center" and loaded.image_spec["mean"] == [0.5] * 3
    wide = Image.new("RGB", (64, 32), (200, 10, 10))
    wide.paste((10, 10, 200), (0, 0, 16, 32))  # a blue strip the centre crop cuts away
    x = loaded.preprocess(wide)
    assert tuple(x.shape) == (3, 32, 32) and float(x[2].max()) < 0  # no blue left
    tok = transformers.AutoTokenizer.from_pretrained(siglip_dir)
    ref = tok(
        ["a satellite image. an airport"], padding="max_length", max_length=12, truncation=True
    )
    assert loaded.tokenize(["an airport"]).tolist() == ref["input_ids"]
    assert models.address(hf_model("siglip", siglip_dir)) != models.address(
        hf_model("siglip", siglip_dir, text={"prefix": "a satellite image. "})
    )
    with pytest.raises(RsmEvalError, match="resize 'squash' goes with crop 'none'"):
        models.build(hf_model("siglip", siglip_dir, preprocess={"crop": "center"}))


def test_family_and_activation_are_checked(siglip_dir):
    with pytest.raises(RsmEvalError, match="configured family 'clip', but .* 'siglip' model"):
        models.build(hf_model("clip", siglip_dir))
    with pytest.raises(RsmEvalError, match="activation 'quick_gelu'.*builds 'gelu_pytorch_tanh'"):
        models.build(hf_model("siglip", siglip_dir, activation="quick_gelu"))


# ------------------------------------------------------- SigLIP through the protocols


def recalls(img: np.ndarray, txt: np.ndarray, owner: np.ndarray) -> dict[str, float]:
    """The published protocol in plain NumPy: one positive image per caption."""
    sims = img @ txt.T
    out = {}
    for k in (1, 5, 10):
        top_t = np.argsort(-sims, axis=1)[:, :k]  # image -> captions
        out[f"retrieval-image2text-R@{k}"] = 100 * np.mean(
            [np.any(owner[top_t[i]] == i) for i in range(len(img))]
        )
        top_i = np.argsort(-sims.T, axis=1)[:, :k]  # caption -> images
        out[f"retrieval-text2image-R@{k}"] = 100 * np.mean(
            [owner[j] in top_i[j] for j in range(len(txt))]
        )
    out["retrieval-mean-recall"] = float(np.mean(list(out.values())))
    return out


def test_siglip_runs_through_retrieval_classification_and_the_seed_cli(
    siglip_dir, small_benchmark, tmp_path
):
    from rsm_eval import classify

    data = json.loads((small_benchmark / "dataset_demo.json").read_text())
    test = sorted((i for i in data["images"] if i["split"] == "test"), key=lambda i: i["filename"])
    caps = [s["raw"] for i in test for s in i["sentences"]]
    owner = np.repeat(np.arange(len(test)), [len(i["sentences"]) for i in test])
    pil = [Image.open(small_benchmark / "images" / i["filename"]).convert("RGB") for i in test]
    _, _, img_ref, txt_ref = direct("siglip", siglip_dir, pil, caps, SIGLIP_LENGTH)
    img_ref, txt_ref = unit(img_ref), unit(txt_ref)

    npz = tmp_path / "emb.npz"
    proc = subprocess.run(
        [
            sys.executable, "-m", "rsm_eval", "retrieve", "--backend", "transformers",
            "--model-name", "siglip", "--RSM_CLIP_path", str(siglip_dir),
            "--retrieval-images-dir", str(small_benchmark / "images"),
            "--retrieval-json-dir", str(small_benchmark), "--workers", "0",
            "--device", "cpu", "--cache-dir", str(tmp_path / "cache"),
            "--save-embeddings", str(npz),
        ],
        capture_output=True, text=True, env=snakemake_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    emb = np.load(npz)
    np.testing.assert_allclose(emb["image"], img_ref, atol=1e-5)
    np.testing.assert_allclose(emb["text"], txt_ref, atol=1e-5)
    printed = {k: float(v) for k, v in (ln.split(": ") for ln in proc.stdout.strip().splitlines())}
    expected = recalls(img_ref, txt_ref, owner)
    assert printed == pytest.approx({k: round(v, 2) for k, v in expected.items()}, abs=0.006)

    # Zero-shot classification from the embed stage's table, prompts through the same model.
    from rsm_eval import manifests
    from rsm_eval.config import Dataset

    ds = Dataset(
        name="demo",
        format="karpathy-json",
        annotations=str(small_benchmark / "dataset_demo.json"),
        images=str(small_benchmark / "images"),
    )
    t = tmp_path / "m"
    t.mkdir()
    manifests.write(ds, t / "c.parquet", t / "i.parquet", t / "s.json", code="test")
    model = hf_model("siglip", siglip_dir)
    result = embeddings.embed_split(
        model, t / "c.parquet", small_benchmark / "images", "test", t / "img.parquet",
        t / "txt.parquet", cache_dir=tmp_path / "cache", workers=0, device="cpu",
    )  # fmt: skip
    assert result.images_computed == 0  # the CLI's run already stored them (same address)
    record = classify.classify_split(
        model, t / "c.parquet", t / "img.parquet", split="test", cache_dir=tmp_path / "cache"
    )
    classes = record["classes"]
    texts = classify.prompts(classes)
    _, _, _, prompt_ref = direct("siglip", siglip_dir, pil[:1], texts, SIGLIP_LENGTH)
    per_class = unit(unit(prompt_ref).reshape(len(classes), -1, prompt_ref.shape[1]).mean(1))
    truth = [classes.index(i["filename"].rsplit("_", 1)[0]) for i in test]
    top1 = 100 * np.mean(np.argmax(img_ref @ per_class.T, axis=1) == np.array(truth))
    assert record["top1"] == pytest.approx(top1)
