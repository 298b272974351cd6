"""Generation and completion log-probs, shared by policy training and evaluation.

`sample` draws replies with a plain batched decode loop (left padding, KV cache, explicit
position ids) so that it runs the same on a peft `PeftModel` and a plain causal LM and is
reproducible from one seed. `completion_logprobs` scores a sample's reply tokens under a
model in one batched forward pass; with grad enabled the graph is kept, which is what the
policy-gradient losses backpropagate through. `kl_per_reply` is the sampled estimate of
KL(policy || v0) per reply, sum_t (log pi(y_t) - log pi_ref(y_t)) over y ~ pi (the
per-reply KL of Stiennon et al. 2020 and Ouyang et al. 2022), with the reference the same
PeftModel with its adapter disabled.

Log-probs are at temperature 1: the KL and the policy-gradient terms are about the model
itself, whatever temperature the rollouts were drawn at. Whatever device the model is on,
they come back as float32 CPU tensors (with their graph), and tokens are picked on the
CPU from one seeded generator (see `trainer.device`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from trainer.records import Messages, ProgressFn, as_chat, no_progress

SAMPLE_BATCH = 32  # rows per generation batch: on CPU a wider batch decodes more tokens/s


@dataclass(frozen=True)
class Sample:
    """One sampled reply: prompt tokens, reply tokens (EOS included when finished)."""

    prompt_index: int
    prompt_ids: list[int]
    completion_ids: list[int]
    text: str
    finished: bool


def encode_prompt(tokenizer: Any, prompt: Messages, max_prompt_tokens: int = 768) -> list[int]:
    """Token ids of `prompt` rendered by the chat template with the assistant turn opened.

    Rendered as text and then encoded without special tokens, as the service does, so the
    policy trains on exactly the ids it is served with. Too long a prompt keeps its last
    `max_prompt_tokens` tokens (the end of the conversation matters most).
    """
    text = tokenizer.apply_chat_template(
        as_chat(prompt), tokenize=False, add_generation_prompt=True
    )
    ids = [int(t) for t in tokenizer.encode(str(text), add_special_tokens=False)]
    return ids[-max_prompt_tokens:] if max_prompt_tokens > 0 else ids


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Token ids that end a reply: the tokenizer's EOS and the generation config's."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_cfg = getattr(model, "generation_config", None)
    cfg_eos = getattr(gen_cfg, "eos_token_id", None)
    if isinstance(cfg_eos, int):
        ids.add(cfg_eos)
    elif isinstance(cfg_eos, list):
        ids.update(int(t) for t in cfg_eos)
    if not ids:
        raise ValueError("the tokenizer and the model name no end-of-sequence token")
    return ids


def _left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), right-aligned."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        if s:
            ids[row, width - len(s) :] = torch.tensor(list(s), dtype=torch.long)
            mask[row, width - len(s) :] = 1
    return ids, mask


def _device(model: Any) -> torch.device:
    """Where the model's weights are (inputs go there; results come back to the CPU)."""
    params = getattr(model, "parameters", None)
    first = next(iter(params()), None) if callable(params) else None
    return first.device if first is not None else torch.device("cpu")


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 at each row's first real token (left padding)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _pick(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator) -> Any:
    """Next token per row: argmax at temperature 0, else nucleus sampling."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < top_p
        sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
        choice = torch.multinomial(sorted_p, 1, generator=gen)
        return order.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


def _decode_batch(
    model: Any,
    prompts: Sequence[list[int]],
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    gen: torch.Generator,
    eos: set[int],
    pad_id: int,
) -> list[tuple[list[int], bool]]:
    """(completion ids, finished) per row; a finished row's ids end with its EOS token."""
    device = _device(model)
    ids, mask = (t.to(device) for t in _left_pad(prompts, pad_id))
    pos = _positions(mask)
    rows = len(prompts)
    eos_t = torch.tensor(sorted(eos), dtype=torch.long)
    done = torch.zeros(rows, dtype=torch.bool)
    steps: list[torch.Tensor] = []
    past: Any = None
    cur_ids, cur_pos = ids, pos
    for _ in range(max_new_tokens):
        out = model(
            input_ids=cur_ids,
            attention_mask=mask,
            position_ids=cur_pos,
            past_key_values=past,
            use_cache=True,
            logits_to_keep=1,
        )
        past = out.past_key_values
        nxt = _pick(out.logits[:, -1, :].float().cpu(), temperature, top_p, gen)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        steps.append(nxt)
        done = done | torch.isin(nxt, eos_t)
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones((rows, 1), dtype=mask.dtype, device=device)], dim=1)
        cur_pos = cur_pos[:, -1:] + 1
        cur_ids = nxt[:, None].to(device)
    results: list[tuple[list[int], bool]] = []
    if not steps:
        return [([], False) for _ in prompts]
    table = torch.stack(steps, dim=1).tolist()
    for row in table:
        completion: list[int] = []
        finished = False
        for tok in row:
            completion.append(int(tok))
            if tok in eos:
                finished = True
                break
        results.append((completion, finished))
    return results


def sample(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Messages],
    n: int,
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float = 1.0,
    batch_size: int = SAMPLE_BATCH,
    seed: int = 0,
    max_prompt_tokens: int = 768,
    progress: ProgressFn = no_progress,
) -> list[Sample]:
    """`n` replies to each prompt, prompt-major (all of prompt 0's, then prompt 1's...).

    The same seed, prompts and batch size give the same replies. Temperature 0 is greedy.
    `progress(done, total, {})` is called after each batch of rows.
    """
    encoded = [encode_prompt(tokenizer, p, max_prompt_tokens) for p in prompts]
    rows = [(i, encoded[i]) for i in range(len(prompts)) for _ in range(n)]
    eos = eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    out: list[Sample] = []
    with torch.inference_mode():
        for start in range(0, len(rows), max(1, batch_size)):
            chunk = rows[start : start + max(1, batch_size)]
            decoded = _decode_batch(
                model,
                [ids for _, ids in chunk],
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                gen=gen,
                eos=eos,
                pad_id=int(pad_id),
            )
            for (index, ids), (completion, finished) in zip(chunk, decoded, strict=True):
                text = str(tokenizer.decode(completion, skip_special_tokens=True))
                out.append(Sample(index, list(ids), completion, text, finished))
            progress(len(out), len(rows), {})
    return out


def _completion_pass(
    model: Any, samples: Sequence[Sample], batch_size: int, hidden: bool
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    logps: list[torch.Tensor] = []
    states: list[torch.Tensor] = []
    step = max(1, batch_size)
    for start in range(0, len(samples), step):
        chunk = samples[start : start + step]
        width = max(len(s.completion_ids) for s in chunk)
        if width == 0:
            for _ in chunk:
                logps.append(torch.zeros(0))
                if hidden:
                    states.append(torch.zeros(0))
            continue
        ids, mask = (
            t.to(_device(model))
            for t in _left_pad([s.prompt_ids + s.completion_ids for s in chunk], 0)
        )
        # Rows are right-aligned: the last `width` tokens hold every completion, and the
        # logits one position earlier predict them.
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=_positions(mask),
            use_cache=False,
            logits_to_keep=width + 1,
            output_hidden_states=hidden,
        )
        logits = out.logits[:, :-1, :].float()
        targets = ids[:, -width:]
        token_logp = logits.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(
            logits, dim=-1
        )
        token_logp = token_logp.cpu()
        if hidden:
            last = out.hidden_states[-1][:, -width - 1 : -1, :].float().cpu()
        for row, s in enumerate(chunk):
            n = len(s.completion_ids)
            logps.append(token_logp[row, width - n :])
            if hidden:
                states.append(last[row, width - n :, :])
    return logps, states


def completion_logprobs(
    model: Any, samples: Sequence[Sample], batch_size: int = 8
) -> list[torch.Tensor]:
    """Per-token log-probs of each sample's completion under `model` (one 1-D tensor each).

    Runs in the caller's grad mode: under grad the tensors carry the graph.
    """
    return _completion_pass(model, samples, batch_size, hidden=False)[0]


def completion_states(
    model: Any, samples: Sequence[Sample], batch_size: int = 8
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-token log-probs and the last hidden states that predicted each token.

    The hidden state for token t is the final (normed) layer output at the position before
    it, [len, hidden] per sample: what a value head reads as the state s_t.
    """
    return _completion_pass(model, samples, batch_size, hidden=True)


def reference_logprobs(
    policy: Any, samples: Sequence[Sample], batch_size: int = 8
) -> list[torch.Tensor]:
    """Completion log-probs under v0: the PeftModel `policy` with its adapter disabled."""
    with torch.no_grad(), policy.disable_adapter():
        return completion_logprobs(policy, samples, batch_size)


def kl_per_reply(policy: Any, samples: Sequence[Sample], batch_size: int = 8) -> list[float]:
    """Sampled KL(policy || v0) per reply in nats: sum_t logp_policy - logp_v0."""
    with torch.no_grad():
        mine = completion_logprobs(policy, samples, batch_size)
    ref = reference_logprobs(policy, samples, batch_size)
    return [float((a - b).sum()) for a, b in zip(mine, ref, strict=True)]
