"""Engine-level behaviour: text streaming helpers, the transformers engine, LoRA versions."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from service.chat.engines.base import EngineError, Sampling, VersionSpec
from service.chat.engines.transformers_engine import TransformersEngine
from service.chat.textstream import IncrementalText, StopMatcher
from service.chat.tokenizer import ChatTokenizer
from store.domain import VersionKind


def test_stop_matcher_across_deltas() -> None:
    m = StopMatcher(["END"])
    assert m.feed("hello E") == ("hello ", False)
    assert m.feed("N") == ("", False)
    assert m.feed("D tail") == ("", True)


def test_stop_matcher_releases_false_partial() -> None:
    m = StopMatcher(["END"])
    assert m.feed("ab E") == ("ab ", False)
    assert m.feed("x") == ("Ex", False)
    assert m.flush() == ""


def test_incremental_text_holds_partial_utf8(tiny_model_dir: Path) -> None:
    tok = ChatTokenizer.from_dir(tiny_model_dir)
    ids = tok.hf.encode("héllo 世界 ok", add_special_tokens=False)
    inc = IncrementalText(tok.decode)
    out = "".join(inc.push(i) for i in ids)
    assert out == "héllo 世界 ok"


async def _collect(
    engine: TransformersEngine, version: str, ids: list[int], s: Sampling
) -> tuple[str, int, str | None]:
    text, n, finish = "", 0, None
    async for d in engine.generate(version, ids, s, "r"):
        text += d.text
        n += d.num_tokens
        finish = d.finish_reason or finish
    return text, n, finish


@pytest.fixture
async def engine(tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    e = TransformersEngine(tiny_model_dir)
    await e.start()
    await e.load_version(VersionSpec("v0", VersionKind.BASE, tiny_model_dir))
    yield e
    await e.shutdown()


async def test_max_tokens_and_seed(engine: TransformersEngine, tiny_model_dir: Path) -> None:
    ids = ChatTokenizer.from_dir(tiny_model_dir).encode_chat([{"role": "user", "content": "hi"}])
    s = Sampling(temperature=1.0, max_tokens=7, seed=5)
    a = await _collect(engine, "v0", ids, s)
    b = await _collect(engine, "v0", ids, s)
    assert a == b
    assert a[1] == 7 and a[2] == "length"


async def test_stop_string_ends_reply_before_it(
    engine: TransformersEngine, tiny_model_dir: Path
) -> None:
    ids = ChatTokenizer.from_dir(tiny_model_dir).encode_chat([{"role": "user", "content": "hi"}])
    full, _, _ = await _collect(engine, "v0", ids, Sampling(max_tokens=40, seed=9))
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert stop.strip(), "reply too short to pick a stop string"
    cut, _, finish = await _collect(
        engine, "v0", ids, Sampling(max_tokens=40, seed=9, stop=(stop,))
    )
    assert finish == "stop"
    assert cut == full[: full.index(stop)]


async def test_closing_a_stream_early_frees_the_engine(
    engine: TransformersEngine, tiny_model_dir: Path
) -> None:
    ids = ChatTokenizer.from_dir(tiny_model_dir).encode_chat([{"role": "user", "content": "hi"}])
    gen = engine.generate("v0", ids, Sampling(max_tokens=500, seed=1), "r")
    async with contextlib.aclosing(gen):
        async for _ in gen:
            break
    _text, n, _ = await _collect(engine, "v0", ids, Sampling(max_tokens=3, seed=1))
    assert n == 3


async def test_unknown_version_and_reused_name(
    engine: TransformersEngine, tiny_model_dir: Path
) -> None:
    with pytest.raises(EngineError, match="not loaded"):
        await _collect(engine, "v9", [1, 2], Sampling(max_tokens=2))
    with pytest.raises(EngineError, match="never reused"):
        await engine.load_version(VersionSpec("v0", VersionKind.BASE, tiny_model_dir))


async def test_lora_version_changes_replies_and_leaves_base_alone(
    engine: TransformersEngine, tiny_model_dir: Path, tmp_path: Path
) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    peft = get_peft_model(
        base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.5)
    peft.save_pretrained(str(tmp_path / "adapter"))

    ids = ChatTokenizer.from_dir(tiny_model_dir).encode_chat([{"role": "user", "content": "hi"}])
    s = Sampling(temperature=0.0, max_tokens=12)
    before = await _collect(engine, "v0", ids, s)
    await engine.load_version(VersionSpec("v1", VersionKind.LORA, tmp_path / "adapter"))
    assert engine.loaded_versions() == ["v0", "v1"]
    with_lora = await _collect(engine, "v1", ids, s)
    after = await _collect(engine, "v0", ids, s)
    assert with_lora != before
    assert after == before
    # Merged mode: v1 from a merged copy of the weights writes the same reply; v0 is intact.
    timings = await engine.set_weights("v1")
    assert engine.weights_version() == "v1" and timings["pause_s"] == 0.0
    assert await _collect(engine, "v1", ids, s) == with_lora
    assert await _collect(engine, "v0", ids, s) == before
    await engine.set_weights("v0")
    assert engine.weights_version() is None
    await engine.unload_version("v1")
    assert engine.loaded_versions() == ["v0"]


async def test_corrupt_adapter_is_an_engine_error(
    engine: TransformersEngine, tmp_path: Path
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_text("{not json")
    with pytest.raises(EngineError, match="cannot load"):
        await engine.load_version(VersionSpec("v2", VersionKind.LORA, bad))
    assert engine.loaded_versions() == ["v0"]


def test_vllm_dtype_auto_takes_float32_on_a_cpu_without_avx512_or_bf16(tmp_path: Path) -> None:
    from store.hardware import choose_dtype, cpu_flags

    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma f16c\n\n"
        "processor\t: 1\nflags\t\t: fpu sse2 avx avx2 fma f16c\n"
    )
    avx2 = cpu_flags(info)
    assert {"avx2", "fma"} <= avx2 and "avx512f" not in avx2
    assert choose_dtype("auto", cuda=False, flags=avx2)[0] == "float32"
    # AVX-512 (emulated bf16 in vector registers), native bf16, Arm's bf16 feature
    for flag in ("avx512f", "avx512_bf16", "amx_bf16", "bf16"):
        dtype, why = choose_dtype("auto", cuda=False, flags=avx2 | {flag})
        assert (dtype, flag in why) == ("bfloat16", True)
    arm = tmp_path / "cpuinfo-arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    assert choose_dtype("auto", cuda=False, flags=cpu_flags(arm))[0] == "bfloat16"


def test_vllm_dtype_explicit_is_kept_and_a_gpu_keeps_the_models(tmp_path: Path) -> None:
    from store.hardware import choose_dtype, cpu_flags

    assert choose_dtype("bfloat16", cuda=False, flags=frozenset())[0] == "bfloat16"
    assert choose_dtype("float16", cuda=True, flags=frozenset())[0] == "float16"
    assert choose_dtype("auto", cuda=True, flags=frozenset())[0] == "auto"
    assert cpu_flags(tmp_path / "missing") == frozenset()  # unreadable: no flags, float32
    assert choose_dtype("auto", cuda=False, flags=frozenset())[0] == "float32"
