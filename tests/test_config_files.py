"""A model's config.json that is missing, broken or of the wrong JSON type is a plain error naming it, in
generate and in inspect (which exits non-zero), never an AttributeError or TypeError from deep inside."""

import pytest

from emo_pipeline.cli import main
from emo_pipeline.config import tiny_memo_config
from emo_pipeline.tiny import write_tiny_memo_folder, write_tiny_model_folder

WRONG = {"a list": "[1, 2]", "a number": "5", "a string": '"use_inflated_groupnorm"', "broken JSON": "{\"a\": "}


@pytest.fixture(scope="module")
def memo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("memo")
    write_tiny_memo_folder(root, tiny_memo_config())
    return root


@pytest.mark.parametrize("content", list(WRONG.values()) + [None], ids=list(WRONG) + ["missing"])
def test_inspect_and_generate_report_a_bad_memo_config_and_fail(memo_root, tmp_path, capsys, content):
    config = memo_root / "memo" / "diffusion_net" / "config.json"
    original = config.read_text()
    try:
        if content is None:
            config.unlink()
        else:
            config.write_text(content)
        assert main(["inspect", str(memo_root / "memo")]) == 2
        err = capsys.readouterr().err
        assert str(config) in err and ("missing" if content is None else "download it again") in err, err
        assert main(["generate", "--model", str(memo_root / "memo"), "--out", str(tmp_path / "o.mp4"),
                     "--steps", "1"]) == 2
        assert str(config) in capsys.readouterr().err
    finally:
        config.write_text(original)
    assert main(["inspect", str(memo_root / "memo")]) == 0  # the whole folder again


@pytest.mark.parametrize("part,name", [("vae", "config.json"), ("wav2vec", "config.json"),
                                       ("wav2vec", "preprocessor_config.json")])
def test_a_vae_or_wav2vec_config_of_the_wrong_type_is_named(tmp_path, capsys, part, name):
    write_tiny_model_folder(tmp_path / "models")
    (tmp_path / "models" / part / name).write_text("[1, 2]")
    assert main(["generate", "--model", str(tmp_path / "models" / "tiny"), "--out", str(tmp_path / "o.mp4"),
                 "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'models' / part / name} holds a JSON list, not the object of settings" in err, err
