"""Settings from the environment and an env file; `loopchat model prepare`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from loopchat.cli import main
from service.settings import EngineKind, Settings, load_settings
from store.db.models import PolicyVersion


def test_env_and_env_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOOPCHAT_ENGINE", "transformers")
    monkeypatch.setenv("LOOPCHAT_DATA_DIR", str(tmp_path))
    s = Settings()
    assert s.engine is EngineKind.TRANSFORMERS
    assert s.resolved_database_url == f"sqlite:///{(tmp_path / 'loopchat.db').resolve()}"
    assert s.resolved_model_dir == tmp_path / "models" / "SmolLM2-135M-Instruct"
    env = tmp_path / "loopchat.env"
    env.write_text("LOOPCHAT_PORT=9123\nLOOPCHAT_MAX_NEW_TOKENS=77\n")
    s = load_settings(env)
    assert s.port == 9123 and s.max_new_tokens == 77


def test_bad_settings_fail_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPCHAT_ENGINE", "tensorrt")
    with pytest.raises(ValidationError, match="engine"):
        Settings()
    monkeypatch.setenv("LOOPCHAT_ENGINE", "auto")
    monkeypatch.setenv("LOOPCHAT_PORT", "99999")
    with pytest.raises(ValidationError, match="port"):
        Settings()


def _versions(db: Path) -> list[tuple[str, str, str]]:
    eng = sa.create_engine(f"sqlite:///{db}")
    with eng.connect() as c:
        rows = c.execute(
            sa.select(PolicyVersion.name, PolicyVersion.status, PolicyVersion.artifact_uri)
        )
        out = [tuple(r) for r in rows]
    eng.dispose()
    return out  # type: ignore[return-value]


def test_prepare_registers_a_given_model_dir_once(tmp_path: Path, tiny_model_dir: Path) -> None:
    args = ["model", "prepare", "--data-dir", str(tmp_path), "--model", str(tiny_model_dir)]
    assert main(args) == 0
    assert main(args) == 0
    assert _versions(tmp_path / "loopchat.db") == [("v0", "serving", str(tiny_model_dir.resolve()))]


def test_prepare_refuses_a_non_model_dir(tmp_path: Path) -> None:
    assert main(["model", "prepare", "--data-dir", str(tmp_path), "--model", str(tmp_path)]) == 2


@pytest.mark.slow
def test_prepare_materializes_the_bundled_model(tmp_path: Path) -> None:
    assert main(["model", "prepare", "--data-dir", str(tmp_path)]) == 0
    model = tmp_path / "models" / "SmolLM2-135M-Instruct"
    cfg = json.loads((model / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert cfg["num_hidden_layers"] == 30 and cfg["vocab_size"] == 49152
    assert (model / "model.safetensors").stat().st_size > 500_000_000
    assert not [p for p in tmp_path.joinpath("models").iterdir() if p.name.startswith(".")]
    assert _versions(tmp_path / "loopchat.db") == [("v0", "serving", str(model.resolve()))]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model))
    lm = AutoModelForCausalLM.from_pretrained(str(model))
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = lm.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0][ids["input_ids"].shape[1] :])


def test_run_refuses_a_bad_trainer_config_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "train.toml"
    bad.write_text('[policy]\nlearning_rate = "fast"\n')
    args = ["run", "--data-dir", str(tmp_path)]
    assert main([*args, "--train-config", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml" in capsys.readouterr().err
    assert main([*args, "--train-config", str(bad)]) == 2
    assert "learning_rate" in capsys.readouterr().err
    assert main([*args, "--train-set", "policy.nonsense=1"]) == 2
    assert "nonsense" in capsys.readouterr().err
    assert not (tmp_path / "loopchat.db").exists()  # nothing was prepared or started


def test_vllm_kv_cache_is_sized_explicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.chat.engines.vllm_engine import VllmOptions

    assert Settings().vllm_kv_cache_gib == 1.0 and VllmOptions().kv_cache_gib == 1.0
    monkeypatch.setenv("LOOPCHAT_VLLM_KV_CACHE_GIB", "0")
    with pytest.raises(ValidationError, match="vllm_kv_cache_gib"):
        Settings()
