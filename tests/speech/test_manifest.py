import pytest

from cellstate.speech.manifest import ManifestError, read_manifest, write_manifest


@pytest.fixture
def wav(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")  # the reader checks existence, not content
    return tmp_path


def test_a_manifest_resolves_paths_against_its_folder(wav):
    write_manifest(wav / "m.csv", [("a.wav", "one  two", "v1")])
    [utt] = read_manifest(wav / "m.csv")
    assert utt.path == (wav / "a.wav").absolute() and utt.words == ("one", "two")
    assert utt.voice == "v1"
    (wav / "plain.csv").write_text("path,transcript\na.wav,oh\n")  # no voice column
    assert read_manifest(wav / "plain.csv")[0].voice == ""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file,words\na.wav,one\n", "missing path, transcript"),
        ("", "an empty file"),
        ("path,transcript\n", "no utterances"),
        ("path,transcript\na.wav,   \n", "line 2: empty transcript"),
        ("path,transcript\nb.wav,one\n", "line 2: no audio file"),
        ("path,transcript\na.wav\n", "line 2: expected 2 fields"),
        ("path,transcript\na.wav,one,extra\n", "line 2: expected 2 fields"),
    ],
)
def test_manifest_errors_name_the_file_line_and_problem(wav, text, message):
    (wav / "m.csv").write_text(text)
    with pytest.raises(ManifestError, match=message) as error:
        read_manifest(wav / "m.csv")
    assert str(wav / "m.csv") in str(error.value)


def test_a_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="no manifest at"):
        read_manifest(tmp_path / "nothing.csv")
