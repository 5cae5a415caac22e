"""Batched, jitted inference: waveforms in, scores and embeddings out, features computed on the device.

One jitted function takes a batch of waveforms `(B, S)` and returns what is asked of it (scores, logits,
pooled embeddings, tokens, attention): the Kaldi filterbank, the model and the activation all run inside it,
so the host only decodes audio. Every batch has the same shape (the last one is padded), and compiled
functions are kept per (batch shape, outputs), so a run over many files compiles once.

Files are decoded in a thread pool while the device computes the previous batch; a file that cannot be read
is reported through a callback and the rest go on.

    classify = ast_jax.pipeline("runs/demo/model")
    classify("clip.wav")          # [{"score": 0.97, "label": "yes"}, ...] like transformers' pipeline
    classify(["a.wav", "b.wav"])  # one list per input
"""

from __future__ import annotations

import collections
import collections.abc
import dataclasses
import glob
import itertools
import math
import numbers
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ast_jax import features as features_lib
from ast_jax._checks import is_positive_int
from ast_jax.data.files import AUDIO_EXTENSIONS, audio_files, file_or_dangling_link
from ast_jax.model import compute_copy, dtype_name
from ast_jax.pretrained import Pretrained, scores_from_logits

# How scores are made from logits: transformers' function_to_apply ("none": the logits themselves).
ACTIVATIONS = ("softmax", "sigmoid", "none")
# What the jitted function can return: see `AST` for pooled, tokens and attention, `ast_jax.explain` for
# rollout and last_attention (computed on the device, so the full attention never leaves it).
OUTPUTS = ("logits", "scores", "pooled", "tokens", "attention", "input_values", "rollout", "last_attention")


def load_model_source(source: str | os.PathLike | Pretrained, dtype: Any = None) -> Pretrained:
    """A `Pretrained` from anything `ast_jax.convert.load_pretrained` accepts (or a `Pretrained` itself), with
    `dtype` (when given: "bfloat16", jnp.bfloat16, torch.bfloat16, ...) as its compute dtype."""
    dtype = None if dtype is None else dtype_name(dtype)
    if isinstance(source, Pretrained):
        return source if dtype is None else dataclasses.replace(source, config=source.config.replace(dtype=dtype))
    from ast_jax.convert import load_pretrained

    return load_pretrained(source, dtype=dtype)


def expand_inputs(patterns: Sequence[str]) -> tuple[list[str], list[str]]:
    """Audio files named by `patterns` (files, folders searched recursively, globs), and the patterns that
    matched nothing. Files named directly are kept whatever their extension, so that a bad one is reported; a
    name that exists is that file even where it holds glob characters (`take[1].wav`). A glob, like a folder,
    gives the files of each real folder once (through links to folders, and around a link back up the tree),
    links that lead nowhere included, to be reported."""
    files, unmatched = [], []
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = [str(p) for p in audio_files(Path(pattern))]
        elif glob.has_magic(pattern) and not os.path.lexists(pattern):
            found, seen = [], set()
            for path in sorted(glob.glob(pattern, recursive=True)):
                place = (os.path.realpath(os.path.dirname(path) or "."), os.path.basename(path))
                if file_or_dangling_link(path) and path.lower().endswith(AUDIO_EXTENSIONS) and place not in seen:
                    seen.add(place)
                    found.append(path)
        else:
            found = [pattern]  # a missing file is reported by the reader, in order, like any other bad file
        if not found:
            unmatched.append(pattern)
        files.extend(found)
    return files, unmatched


def decode_in_background(items: Iterable[Any], decode: Callable[[Any], Any], *, workers: int = 4,
                         prefetch: int = 64) -> Iterator[tuple[Any, Any, Exception | None]]:
    """`(item, decode(item), None)` or `(item, None, error)` in input order, decoding up to `prefetch` items
    ahead in `workers` threads (soundfile and the resampler release the GIL, so this overlaps the device)."""
    items = iter(items)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        pending = collections.deque((item, pool.submit(decode, item)) for item in itertools.islice(items, prefetch))
        while pending:
            item, future = pending.popleft()
            for following in itertools.islice(items, 1):
                pending.append((following, pool.submit(decode, following)))
            try:
                yield item, future.result(), None
            except (OSError, ValueError, RuntimeError) as error:
                yield item, None, error


def default_batch_size() -> int:
    """6 on CPU and 64 on accelerators, which want large batches.

    On CPU XLA's AST-base runs about 20% faster per clip at 8 than at 32 (cache-sized matrix products;
    bench/bench_inference_model.py), and 6 is a little faster again: its temporary buffer (30 MB for
    128-frame clips, against 38 MB at 8) stays under the 32 MB above which glibc maps a fresh block for every
    call, so calls reuse it rather than fault it in (1,200 page faults a clip at 8, about 30 at 6; 8.2 against
    7.9 clips/s, four paired runs, in a process without ast_jax/_host_memory.py's tunable).
    """
    return 6 if jax.default_backend() == "cpu" else 64


class Predictor:
    """The jitted waveform-to-outputs function of one model, applied batch by batch.

    With several local devices (GPUs, or CPU devices: JAX_NUM_CPU_DEVICES), a batch is split across as many of
    them as divide the batch size; a batch whose rows do not divide among them runs on the first.

    `activation` ("softmax", "sigmoid", or "none" for the logits) defaults to what the model was trained with.
    """

    def __init__(self, model: Pretrained, *, batch_size: int | None = None, activation: str | None = None):
        batch_size = default_batch_size() if batch_size is None else batch_size
        if not is_positive_int(batch_size):
            raise ValueError(f"batch size must be a positive integer, got {batch_size!r}")
        batch_size = int(batch_size)
        self.model = model
        self.batch_size = batch_size
        self.activation = activation or model.activation
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        feats = model.features
        # Samples whose frames fill the model's input exactly; longer audio is cut here (the extractor keeps
        # only the first target_length frames anyway) and shorter audio is zero-padded, its missing frames
        # made the extractor's zero rows inside the jitted function.
        self.clip_samples = feats.input_samples
        # Parameters placed on the device once: handing the host (numpy) copy to every call would transfer all
        # of them per batch (about 4% of a CPU batch for AST-base). With several local devices (GPUs, or the two
        # CPU devices the `ast-jax` inference commands ask for, ast_jax/_cpu_devices.py) batches are split
        # across as many of them as divide the batch size (their greatest common divisor), each of those then
        # holding a copy, made when the first split batch comes; a batch whose rows do not divide among them
        # (one clip, say) runs whole on the first device.
        self.devices = jax.local_devices()[:math.gcd(batch_size, jax.local_device_count())]
        self.params = jax.device_put(compute_copy(model.params, model.config.compute_dtype), self.devices[0])
        self._replicated_params = None
        mesh = jax.sharding.Mesh(np.array(self.devices), ("batch",))
        self._rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
        self._replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        self._compiled: dict[tuple[int, tuple[str, ...]], Any] = {}

    def _params_on_every_device(self):
        """The parameters copied to each device a batch is split across, once; the first device's copy then
        becomes `params`, so that device holds one."""
        if self._replicated_params is None:
            self._replicated_params = jax.device_put(self.params, self._replicated)
            self.params = jax.tree_util.tree_map(
                lambda array: next(shard.data for shard in array.addressable_shards
                                   if shard.device == self.devices[0]), self._replicated_params)
        return self._replicated_params

    def spreads(self, rows: int) -> bool:
        """Whether a batch of `rows` is split across the local devices (else it runs on the first)."""
        return len(self.devices) > 1 and rows % len(self.devices) == 0

    def _function(self, outputs: tuple[str, ...]):
        model, feats, activation = self.model.model, self.model.features, self.activation

        def forward(params, waveforms, lengths):
            # Zero-padded clips with their true lengths: each row equals its clip extracted alone.
            input_values = features_lib.input_values(waveforms, feats, lengths)  # (B, target_length, bins)
            wants_attention = bool({"attention", "rollout", "last_attention"} & set(outputs))
            logits, out = model.apply({"params": params}, input_values, return_attention=wants_attention,
                                      return_tokens="tokens" in outputs)
            scores = scores_from_logits(logits, activation)
            available = {"logits": logits, "scores": scores, "input_values": input_values, **out}
            if wants_attention:
                from ast_jax.explain import special_token_maps

                available.update(special_token_maps(out["attention"]))
            # float32 whatever the compute dtype: bfloat16 arrays are ml_dtypes arrays that torch and np.save
            # do not take
            return jax.tree_util.tree_map(
                lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                {name: available[name] for name in outputs})

        return forward

    def compiled(self, batch: int, outputs: tuple[str, ...]):
        """The function for `batch` rows returning `outputs`, compiled once and kept."""
        key = (batch, outputs)
        if key not in self._compiled:
            unknown = sorted(set(outputs) - set(OUTPUTS))
            if unknown:
                raise ValueError(f"unknown outputs {unknown}; choose from {list(OUTPUTS)}")
            shapes = (jax.tree_util.tree_map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), self.params),
                      jax.ShapeDtypeStruct((batch, self.clip_samples), jnp.float32),
                      jax.ShapeDtypeStruct((batch,), jnp.int32))
            if self.spreads(batch):
                function = jax.jit(self._function(outputs), in_shardings=(self._replicated, self._rows, self._rows))
            else:
                function = jax.jit(self._function(outputs))
            self._compiled[key] = function.lower(*shapes).compile()
        return self._compiled[key]

    def _batch_rows(self, count: int) -> int:
        """Rows of the compiled batch for `count` examples: the batch size, or for a short request the next
        power of two (so one file does not pay for a full batch, and at most log2(batch size) shapes exist)."""
        return min(self.batch_size, 1 << max(0, count - 1).bit_length())

    def _dispatch(self, waveforms: Sequence[np.ndarray], outputs: tuple[str, ...], rows: int):
        batch = np.zeros((rows, self.clip_samples), np.float32)
        lengths = np.zeros((rows,), np.int32)
        for row, waveform in enumerate(waveforms):
            waveform = waveform[:self.clip_samples]
            batch[row, :len(waveform)] = waveform
            lengths[row] = len(waveform)
        function = self.compiled(rows, outputs)
        if self.spreads(rows):
            return function(self._params_on_every_device(), jax.device_put(batch, self._rows),
                            jax.device_put(lengths, self._rows))
        return function(self.params, batch, lengths)  # asynchronous

    def run(self, examples: Iterable[tuple[Any, np.ndarray]], outputs: Sequence[str] = ("scores",), *,
            count: int | None = None, read_ahead: bool = True,
            batch_size: int | None = None) -> Iterator[tuple[Any, dict[str, np.ndarray]]]:
        """`(key, {output: array for this example})` for each `(key, waveform)`, in order.

        Batch k+1 is gathered (decoded) while the device computes batch k; without `read_ahead` (examples that
        arrive live) each batch's results are given as soon as it is computed. `count`, when known, lets a
        short request use a smaller compiled batch; `batch_size` replaces the predictor's for this run.
        """
        outputs = tuple(sorted(outputs))
        rows = batch_size or (self._batch_rows(count) if count is not None else self.batch_size)
        examples = iter(examples)
        in_flight = None
        while True:
            chunk = list(itertools.islice(examples, rows))
            if chunk:
                keys = [key for key, _ in chunk]
                dispatched = (keys, self._dispatch([w for _, w in chunk], outputs, rows))
                if not read_ahead:
                    yield from _split_rows(*dispatched)
                    continue
            if in_flight is not None:
                yield from _split_rows(*in_flight)
            if not chunk:
                return
            in_flight = dispatched

    def outputs(self, waveforms: Sequence[np.ndarray], outputs: Sequence[str] = ("scores",)) -> dict[str, Any]:
        """Outputs stacked over `waveforms` (each float32 mono at the model's sample rate; at least one)."""
        if not len(waveforms):
            raise ValueError("no waveforms to compute outputs for")
        results = [out for _, out in self.run(enumerate(waveforms), outputs, count=len(waveforms))]
        return jax.tree_util.tree_map(lambda *rows: np.stack(rows), *results)

    def top_k(self, scores: np.ndarray, k: int | None = 5, logits: np.ndarray | None = None
              ) -> list[dict[str, Any]]:
        """`[{"score", "label"}]` of the `k` best labels (all when None), best first, like transformers.

        With `logits` the labels are ranked by them: both activations keep the logits' order, but float32
        scores lose it where they round to the same value (a sigmoid is 1.0 above a logit of about 17; softmax
        probabilities far below the best underflow to 0), and ranking such ties by label index would put a
        lower-scored label first."""
        labels = self.model.labels
        k = len(labels) if check_top_k(k) is None else min(int(k), len(labels))
        best = np.argsort(-(scores if logits is None else logits), kind="stable")[:k]
        return [{"score": float(scores[i]), "label": labels[i]} for i in best]


def check_top_k(k: int | None) -> int | None:
    """`k` itself when it is None (every label) or positive, else a ValueError."""
    if k is not None and not is_positive_int(k):
        raise ValueError(f"top_k must be a positive integer (or None for every label), got {k!r}")
    return k


def check_finite(name: Any, values: np.ndarray) -> None:
    """An AudioError naming the input when its outputs are not finite: finite samples so large that the
    filterbank's power overflows."""
    if not np.isfinite(values).all():
        from ast_jax.audio import AudioError

        raise AudioError(f"{name}: the features are not finite (samples far beyond full scale?)")


def _input_name(item: Any, index: int) -> str | os.PathLike:
    """How errors name an input of a call: its path, or its place in the call ("input 2")."""
    return item if isinstance(item, (str, os.PathLike)) else f"input {index}"


def _split_rows(keys, batch_outputs):
    host = jax.tree_util.tree_map(np.asarray, batch_outputs)  # waits for the device
    for row, key in enumerate(keys):
        yield key, jax.tree_util.tree_map(lambda a: a[row], host)


class Pipeline:
    """Audio classification with the call signature and results of transformers' audio-classification pipeline.

    `pipeline(inputs, top_k=5)` takes a path, the bytes of an audio file, a float waveform at the model's
    sample rate (numpy, or any array type numpy reads: torch, jax), a dict {"array" or "raw", "sampling_rate"},
    a list of these, or an iterator of them; it returns [{"score", "label"}] best first, one such list per input
    for a list, and a generator of them for an iterator: each input is classified as soon as it comes, as
    transformers does (at batch size 1), unless the pipeline was made with a `batch_size`, which it then waits
    to fill. Inputs so far beyond full scale that their features overflow are an AudioError.

    Scores are made with the activation the model was trained with, unless `function_to_apply` says otherwise.
    transformers' pipeline uses softmax unless the config's problem_type says multi-label; for the released
    AST checkpoints (trained with BCE, no problem_type) pass function_to_apply="softmax" to get its numbers.

    Constructor: `model` is an ast-jax model folder, an original .pth, a Hugging Face folder, "hf:<repo id>" or
    a `Pretrained`; `batch_size` the clips per jitted call (default 6 on CPU, 64 on an accelerator; a
    shorter request uses the next power of two; split across the local devices when they divide it, see
    `Predictor`); `activation` "sigmoid", "softmax" or "none" (logits; default:
    the model's); `dtype` the compute dtype ("bfloat16" for fast inference on accelerators and on CPUs with
    AVX512-BF16 or AMX, "float16", or the numpy, JAX or torch dtype; default the model's);
    `workers` the threads that decode files while the device computes (default 4).
    """

    def __init__(self, model: str | os.PathLike | Pretrained, *, batch_size: int | None = None,
                 activation: str | None = None, dtype: str | None = None, workers: int = 4):
        if not is_positive_int(workers):
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        self.model = load_model_source(model, dtype)
        self.predictor = Predictor(self.model, batch_size=batch_size, activation=activation)
        self.workers = workers
        self._iterator_batch = batch_size or 1  # what an iterator's inputs are classified in

    @property
    def labels(self) -> list[str]:
        return self.model.labels

    @property
    def sample_rate(self) -> int:
        return self.model.features.sample_rate

    def load(self, source: Any) -> np.ndarray:
        """One input as float32 mono at the model's sample rate, or an AudioError/OSError naming it.

        A bare array is taken to be at the model's rate already, as transformers' pipeline takes it."""
        from ast_jax.audio import AudioError, as_numpy, is_array, load_audio

        name = str(source) if isinstance(source, (str, os.PathLike)) else None
        if isinstance(source, dict):
            if "sampling_rate" not in source or not ("array" in source or "raw" in source):
                raise ValueError('a dict input needs "array" (or "raw") and "sampling_rate"')
            array = source["array"] if source.get("array") is not None else source.get("raw")
            waveform = load_audio(as_numpy(array), self.sample_rate, source_rate=source["sampling_rate"])
        elif isinstance(source, (numbers.Number, np.generic)):
            # a list of samples, [0.1, -0.2, ...]: a list is several inputs here, as in transformers' pipeline
            raise TypeError(f"cannot classify a single number ({type(source).__name__}): a list or tuple holds "
                            "several inputs; give one waveform as a NumPy array")
        elif is_array(source):
            waveform = load_audio(source, self.sample_rate, source_rate=self.sample_rate)
        elif isinstance(source, (str, os.PathLike, bytes)) or hasattr(source, "read"):
            waveform = load_audio(source, self.sample_rate)
        else:
            raise TypeError(f"cannot classify an object of type {type(source).__name__}: give a path, bytes, a "
                            "binary file object, an array or a dict")
        if not len(waveform):
            raise AudioError(f"{name or 'input'}: no audio samples")
        return waveform

    def __call__(self, inputs: Any, top_k: int | None = 5, function_to_apply: str | None = None):
        """`[{"score", "label"}]`, the `top_k` best (every label for None), for one input; a list of those for a
        list or tuple of inputs; a generator of them for an iterator. `function_to_apply`: "sigmoid",
        "softmax" or "none" instead of the model's activation."""
        check_top_k(top_k)
        predictor = self.predictor
        if function_to_apply is not None and function_to_apply not in ACTIVATIONS:
            raise ValueError(f"function_to_apply must be one of {', '.join(ACTIVATIONS)}, got {function_to_apply!r}")
        # another activation is applied to the logits here, on the host: the device keeps one compiled function
        # and one copy of the parameters
        activation = None if function_to_apply in (None, predictor.activation) else function_to_apply
        if isinstance(inputs, collections.abc.Iterator) and not hasattr(inputs, "read"):
            return self._classify_as_they_come(inputs, top_k, activation)
        single = not isinstance(inputs, (list, tuple))
        items = [inputs] if single else list(inputs)
        if not items:
            return []
        out = predictor.outputs([self.load(item) for item in items], ("scores", "logits"))
        scores = out["scores"] if activation is None else np.asarray(scores_from_logits(out["logits"], activation))
        for index, row in enumerate(scores):
            check_finite(_input_name(items[index], index), row)
        results = [predictor.top_k(row, top_k, logits) for row, logits in zip(scores, out["logits"])]
        return results[0] if single else results

    def _classify_as_they_come(self, inputs: Iterator[Any], top_k: int | None, activation: str | None):
        examples = ((_input_name(item, index), self.load(item)) for index, item in enumerate(inputs))
        for name, out in self.predictor.run(examples, ("scores", "logits"), read_ahead=False,
                                            batch_size=self._iterator_batch):
            scores = out["scores"] if activation is None else np.asarray(scores_from_logits(out["logits"], activation))
            check_finite(name, scores)
            yield self.predictor.top_k(scores, top_k, out["logits"])

    def predict_files(self, paths: Sequence[str], *, top_k: int | None = 5, outputs: Sequence[str] = ("scores",),
                      on_error: Callable[[str, Exception], None] | None = None,
                      ) -> Iterator[tuple[str, dict[str, Any]]]:
        """`(path, outputs)` for each readable file, in order, with "samples" (the decoded length) and, when
        scores are asked for, "labels" (top-k). `paths` is a list of paths (or one path). Files are decoded in
        background threads; unreadable ones go to `on_error` and are skipped (without `on_error`, the first one
        raises)."""
        from ast_jax.audio import AudioError

        check_top_k(top_k)
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]

        def readable():
            for path, waveform, error in decode_in_background(paths, self.load, workers=self.workers):
                if error is None:
                    yield (path, len(waveform)), waveform
                elif on_error is not None:
                    on_error(path, error)
                else:
                    raise error

        asked = tuple(outputs)
        # the logits rank the top-k labels (see Predictor.top_k), asked for with the scores and then dropped
        outputs = asked + (("logits",) if "scores" in asked and "logits" not in asked else ())
        for (path, samples), out in self.predictor.run(readable(), outputs, count=len(paths)):
            try:
                for value in out.values():
                    check_finite(getattr(path, "name", path), value)
            except AudioError as error:
                if on_error is None:
                    raise
                on_error(path, error)
                continue
            out["samples"] = samples
            if "scores" in out:
                out["labels"] = self.predictor.top_k(out["scores"], top_k, out["logits"])
                if "logits" not in asked:
                    del out["logits"]
            yield path, out

    def check_window(self, window_seconds: float, hop_seconds: float | None = None) -> None:
        """A ValueError unless windows this long hold one analysis frame and fit in the model's input, and the
        hop is at least a sample."""
        features = self.model.features
        if not (window_seconds > 0 and (hop_seconds is None or hop_seconds > 0)):
            raise ValueError(f"window and hop must be positive, got {window_seconds} s and {hop_seconds} s")
        if not window_seconds * features.sample_rate >= features.frame_length:
            raise ValueError(f"window {window_seconds:g} s is shorter than one {features.frame_length_ms:g} ms "
                             f"analysis frame")
        span = self.predictor.clip_samples / features.sample_rate
        if features.num_frames(round(window_seconds * features.sample_rate)) > features.target_length:
            raise ValueError(f"window {window_seconds:g} s is longer than the model's input ({span:g} s, "
                             f"{features.target_length} frames), which would see only its first {span:g} s; "
                             f"use a window of at most {span:g} s")
        if hop_seconds is not None and not round(hop_seconds * features.sample_rate) >= 1:
            raise ValueError(f"hop {hop_seconds:g} s is shorter than one sample at {features.sample_rate} Hz")

    def windows(self, source: Any, window_seconds: float, hop_seconds: float | None = None, *,
                top_k: int | None = 5) -> list[dict[str, Any]]:
        """Classify a long recording window by window (keyword spotting over a stream).

        Returns [{"start": seconds, "end": seconds, "labels": [{"score", "label"}]}], one per window. Windows
        start every `hop_seconds` (default: the window) up to the first that reaches the end of the recording,
        which holds what is left (left out if shorter than one 25 ms analysis frame). A window may be at most
        the model's input long (about 1.3 s for the Speech Commands geometry, 10.26 s for AudioSet's); window
        and hop are rounded to whole samples at the model's rate, and the times are those samples'. Files are
        read block by block, so a recording need not fit in memory. Damage or NaN samples further into the
        recording raise an AudioError, and the windows before them are not returned: `iter_windows` yields
        those first, then raises.
        """
        return list(self.iter_windows(source, window_seconds, hop_seconds, top_k=top_k))

    def iter_windows(self, source: Any, window_seconds: float, hop_seconds: float | None = None, *,
                     top_k: int | None = 5, live: bool = False) -> Iterator[dict[str, Any]]:
        """`windows`, one window at a time. A path or file object is read as it is classified, a pipe as its
        audio arrives; with `live`, each window's result comes as soon as it is computed (no read-ahead; a
        pipeline of batch size 1 then answers every window without waiting for the next ones)."""
        from ast_jax.audio import AudioError, is_array, iter_audio_blocks

        check_top_k(top_k)
        self.check_window(window_seconds, hop_seconds)
        rate = self.sample_rate
        hop_seconds = window_seconds if hop_seconds is None else hop_seconds
        if isinstance(source, (str, os.PathLike, bytes)) or hasattr(source, "read"):
            pieces = iter_audio_blocks(source, window_seconds, hop_seconds, rate)
        elif is_array(source):
            # an array at the model's rate, read as a stream is: NaN samples end the windows where they start
            pieces = iter_audio_blocks(source, window_seconds, hop_seconds, rate, source_rate=rate)
        else:
            pieces = iter_audio_blocks(self.load(source), window_seconds, hop_seconds, rate, source_rate=rate)
        damage: list[Exception] = []
        name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else getattr(source, "name", "input")

        def examples():
            # A problem further into the recording (damage, NaN samples) ends the windows; those before it are
            # classified and given first, then the problem is raised.
            try:
                for start, piece in pieces:
                    if start > 0 and len(piece) < self.model.features.frame_length:
                        continue  # a last window shorter than one analysis frame: nothing to classify
                    if not len(piece):
                        raise AudioError(f"{name}: no audio samples")
                    yield (int(round(start * rate)), len(piece)), piece
            except (OSError, ValueError) as error:
                damage.append(error)

        for (start, length), out in self.predictor.run(examples(), ("scores", "logits"), read_ahead=not live):
            check_finite(f"{name} at {start / rate:.2f} s", out["scores"])
            yield {"start": start / rate, "end": (start + length) / rate,
                   "labels": self.predictor.top_k(out["scores"], top_k, out["logits"])}
        if damage:
            raise damage[0]


def pipeline(model: str | os.PathLike | Pretrained, **kwargs: Any) -> Pipeline:
    """An audio-classification `Pipeline` for `model` (an ast-jax folder, .pth, Hugging Face folder, hf:repo,
    or a `Pretrained`). Keyword arguments, all optional: batch_size (clips per jitted call; 6 on CPU, 64 on an
    accelerator), activation ("sigmoid", "softmax", "none"; the model's by default), dtype ("bfloat16" or
    torch.bfloat16 for speed on accelerators and recent CPUs), workers (file-decoding threads, 4); see `Pipeline`.

        classify = ast_jax.pipeline("models/sc")
        classify("yes.wav", top_k=3)  # [{"score": 0.98, "label": "yes"}, ...]
    """
    return Pipeline(model, **kwargs)


