"""Embedding stage: features equal the model's own forward pass, duplicates are embedded once,
and a second call computes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_ARCH
from PIL import Image
from rsm_eval import embeddings, manifests, models
from rsm_eval.config import Dataset, Model


@pytest.fixture(scope="module")
def manifest(small_benchmark, tmp_path_factory):
    out = tmp_path_factory.mktemp("m")
    ds = Dataset(
        name="demo",
        format="karpathy-json",
        annotations=str(small_benchmark / "dataset_demo.json"),
        images=str(small_benchmark / "images"),
    )
    manifests.write(ds, out / "captions.parquet", out / "images.parquet", out / "s.json", "v")
    return out / "captions.parquet"


def test_features_match_direct_forward_and_are_cached(manifest, small_benchmark, tmp_path):
    model = Model(name="m", arch=str(TINY_ARCH), random=5)
    kwargs = dict(
        cache_dir=tmp_path / "cache", batch_size=7, workers=0, device="cpu", chunk_rows=10
    )
    out_i, out_t = tmp_path / "i.parquet", tmp_path / "t.parquet"
    first = embeddings.embed_split(
        model, manifest, small_benchmark / "images", "test", out_i, out_t, **kwargs
    )
    img_keys, img, meta = embeddings.read_features(out_i)
    txt_keys, txt, _ = embeddings.read_features(out_t)
    assert first.images_computed == len(img_keys) == 30
    # Identical captions are embedded once.
    assert first.texts_computed == len(txt_keys) < 150
    assert meta["model_address"] == models.address(model)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)

    # Independent computation: the model's own forward pass on the same files.
    import pyarrow.parquet as pq

    caps = pq.read_table(manifest).to_pandas()
    caps = caps[caps.split == "test"]
    loaded = models.build(model)
    path_of = dict(zip(caps.image_sha256, caps.image_path, strict=False))
    text_of = dict(zip(caps.caption_sha256, caps.caption, strict=False))
    with torch.no_grad():
        x = torch.stack(
            [
                loaded.preprocess(
                    Image.open(small_benchmark / "images" / path_of[k]).convert("RGB")
                )
                for k in img_keys[:5]
            ]
        )
        ref_img = torch.nn.functional.normalize(loaded.model.encode_image(x), dim=-1).numpy()
        tok = loaded.tokenizer([text_of[k] for k in txt_keys[:5]])
        ref_txt = torch.nn.functional.normalize(loaded.model.encode_text(tok), dim=-1).numpy()
    np.testing.assert_allclose(img[:5], ref_img, atol=1e-5)
    np.testing.assert_allclose(txt[:5], ref_txt, atol=1e-5)

    second = embeddings.embed_split(
        model,
        manifest,
        small_benchmark / "images",
        "test",
        tmp_path / "i2.parquet",
        tmp_path / "t2.parquet",
        **kwargs,
    )
    assert (second.images_computed, second.texts_computed) == (0, 0)
    assert second.device.startswith("none")
    _, img2, _ = embeddings.read_features(tmp_path / "i2.parquet")
    np.testing.assert_array_equal(img, img2)


def test_new_images_are_the_only_rows_embedded(small_benchmark, tmp_path):
    """Row-level reuse: a dataset grown by a few images embeds those images (and their new
    captions) only."""
    import json

    doc = json.loads((small_benchmark / "dataset_demo.json").read_text())
    test = [im for im in doc["images"] if im["split"] == "test"]
    added = test[-3:]
    smaller = {**doc, "images": [im for im in doc["images"] if im not in added]}
    (tmp_path / "smaller.json").write_text(json.dumps(smaller))
    model = Model(name="m", arch=str(TINY_ARCH), random=7)
    kwargs = dict(cache_dir=tmp_path / "cache", batch_size=8, workers=0, device="cpu")
    results = []
    for name, ann in (
        ("a", tmp_path / "smaller.json"),
        ("b", small_benchmark / "dataset_demo.json"),
    ):
        ds = Dataset(
            name=name,
            format="karpathy-json",
            annotations=str(ann),
            images=str(small_benchmark / "images"),
        )
        out = tmp_path / name
        manifests.write(ds, out / "c.parquet", out / "i.parquet", out / "s.json", "v")
        results.append(
            embeddings.embed_split(
                model,
                out / "c.parquet",
                small_benchmark / "images",
                "test",
                out / "fi.parquet",
                out / "ft.parquet",
                **kwargs,
            )
        )
    first, second = results
    assert (first.images_computed, first.images_reused) == (len(test) - 3, 0)
    assert (second.images_computed, second.images_reused) == (3, len(test) - 3)
    old_caps = {s["raw"] for im in test[:-3] for s in im["sentences"]}
    new_caps = {s["raw"] for im in added for s in im["sentences"]} - old_caps
    assert second.texts_computed == len(new_caps)
    assert second.texts_reused == len(old_caps | new_caps) - len(new_caps)
