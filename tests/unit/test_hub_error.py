"""The hub error a user sees when the base model cannot be fetched: a few short lines saying what happened and the
two ways out; HF_HUB_OFFLINE advice only when it is set; never "the stacktrace above" (no stack trace is shown)."""

from treegrpo.models.pipeline import hub_error

SD35 = "stabilityai/stable-diffusion-3.5-medium"


def wrapped_hub_failure() -> OSError:
    """What diffusers raises: an OSError pointing at the stack trace, caused by the real failure."""
    try:
        try:
            raise ConnectionError("Failed to resolve 'huggingface.co'. Max retries exceeded with url: /api/models")
        except ConnectionError as cause:
            raise OSError(f"Cannot load model {SD35}: model is not cached locally and an error occurred while "
                          "trying to fetch metadata from the Hub. Please check out the root cause in the stacktrace "
                          "above.") from cause
    except OSError as err:
        return err


def test_offline_says_the_cache_lacks_it_and_the_two_ways_out(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lines = str(hub_error(SD35, wrapped_hub_failure())).splitlines()
    assert 4 <= len(lines) <= 8 and all(len(line) <= 160 for line in lines)
    assert "not in the Hugging Face cache" in lines[1] and "HF_HUB_OFFLINE is set" in lines[1]
    ways = "\n".join(lines[2:])
    assert "unset HF_HUB_OFFLINE" in ways and "treegrpo fetch" in ways
    assert f"hf download {SD35} --local-dir models/stable-diffusion-3.5-medium" in ways
    assert "model.pretrained: models/stable-diffusion-3.5-medium" in ways
    assert "stacktrace" not in " ".join(lines)


def test_online_names_the_real_cause_and_never_advises_unsetting_what_is_not_set(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    text = str(hub_error(SD35, wrapped_hub_failure()))
    assert "ConnectionError: Failed to resolve 'huggingface.co'" in text.splitlines()[1]
    assert "HF_HUB_OFFLINE" not in text and "stacktrace" not in text
    assert "hf auth login" in text and "hf download" in text
    assert all(len(line) <= 160 for line in text.splitlines())
