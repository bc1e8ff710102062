import pytest

from cellstate.lm.sample import SampleConfig, sample, start_text
from cellstate.lm.train import build_model, load_lm_checkpoint


@pytest.fixture(scope="module")
def model_and_vocab(trained_run):
    return build_model(load_lm_checkpoint(trained_run / "checkpoint.pt"))


def test_sampling_is_deterministic_given_the_seed(model_and_vocab):
    model, vocab = model_and_vocab
    first = sample(model, vocab, SampleConfig("the ", length=40, seed=5))
    assert len(first) == 40 and set(first) <= set(vocab.chars)
    assert sample(model, vocab, SampleConfig("the ", length=40, seed=5)) == first
    assert sample(model, vocab, SampleConfig("the ", length=40, seed=6)) != first


def test_the_prompt_conditions_the_sample(model_and_vocab):
    model, vocab = model_and_vocab
    a = sample(model, vocab, SampleConfig("the cat", length=30, seed=1))
    b = sample(model, vocab, SampleConfig("owl.\n", length=30, seed=1))
    assert a != b


def test_default_start_and_unknown_prompt_characters(model_and_vocab):
    _, vocab = model_and_vocab
    assert start_text(vocab, None) == "\n"
    assert start_text(vocab, "the") == "the"
    with pytest.raises(ValueError, match=r"not in the model's vocabulary: 'Q' 'Z'"):
        start_text(vocab, "QZ the")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"length": 0}, "length must be a positive integer"),
        ({"temperature": 0.0}, "temperature must be a positive number"),
        ({"temperature": -1.0}, "temperature must be a positive number"),
        ({"prompt": ""}, "the prompt is empty"),
    ],
)
def test_sample_config_is_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SampleConfig(**kwargs)
