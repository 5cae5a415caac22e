"""Feature extraction throughput: ast-jax's jitted Kaldi features against transformers and kaldi-native-fbank.

    python bench/bench_features.py [--batches 1 32 256] [--repeats 5]

One-second clips (real speech from tests/data, tiled to the batch), Speech Commands settings (128 mel bins,
padded to 128 frames, normalised). Prints clips per second for each implementation and batch size, and the
ratio to transformers' ASTFeatureExtractor as installed here: without torchaudio (which does not install on
this machine) it computes with numpy, clip by clip and frame by frame; with torchaudio it would call
torchaudio.compliance.kaldi.fbank, vectorised over frames, which this script cannot measure (kaldi-native-fbank's
compiled per-clip code is the nearest stand-in). Before timing, ast-jax's features are checked against the
extractor's on the same clips (within 1e-4; the script fails otherwise).
kaldi-native-fbank runs at 80 mel bins (it refuses 128 with a 512-point FFT) and gives log-mel only: a
reference point for compiled per-clip code, not a like-for-like peer. ast-jax runs on JAX's default device;
the others always run on the CPU. Best of `--repeats` timed runs, after a warm-up that compiles. The
`input_values` rows call it eagerly, as a user would: on a CPU more than 32 clips are then computed 16 at a time,
which keeps the float64 intermediates in cache; the "whole batch in jit" row shows the batch computed whole, as
inside a jitted step.

Also prints the expected throughput on one H200 from the FLOP and byte count of the computation.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import soundfile as sf

from ast_jax.features import FeatureConfig, input_values

CLIPS = Path(__file__).resolve().parent.parent / "tests" / "data" / "speech_clips"
CONFIG = FeatureConfig.for_dataset("speech_commands")

# H200 SXM datasheet: HBM3e bandwidth, FP32 and FP64 (non-tensor) peak.
H200_BYTES_PER_S, H200_FP32, H200_FP64 = 4.8e12, 67e12, 34e12


def clips_per_second(run, batch: int, repeats: int) -> float:
    """Best rate over `repeats` timings, each of enough calls for ~0.3 s (or one call)."""
    run()  # compile / warm up
    start = time.perf_counter()
    run()
    calls = max(1, int(0.3 / max(time.perf_counter() - start, 1e-6)))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            run()
        best = min(best, (time.perf_counter() - start) / calls)
    return batch / best


def ast_jax_runner(waveforms: np.ndarray, **kwargs):
    device_waveforms = jax.device_put(waveforms)
    return lambda: input_values(device_waveforms, CONFIG, **kwargs).block_until_ready()


def ast_jax_whole_batch_runner(waveforms: np.ndarray):
    """input_values inside jit, as a train or predict step calls it: the batch computed whole, where an eager call
    on a CPU computes more than 32 clips 16 at a time (ast_jax/features.py, `_in_groups`)."""
    step = jax.jit(lambda w: input_values(w, CONFIG))
    device_waveforms = jax.device_put(waveforms)
    return lambda: step(device_waveforms).block_until_ready()


def transformers_runner(waveforms: np.ndarray):
    from transformers import ASTFeatureExtractor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the empty mel filter (Kaldi's quirk)
        extractor = ASTFeatureExtractor(**CONFIG.to_hf_preprocessor_config())
    clips = list(waveforms)
    return lambda: extractor(clips, sampling_rate=CONFIG.sample_rate, return_tensors="np")


def kaldi_native_fbank_runner(waveforms: np.ndarray):
    import kaldi_native_fbank as knf

    options = knf.FbankOptions()
    options.frame_opts.dither = 0.0
    options.frame_opts.window_type = "hanning"
    options.mel_opts.num_bins = 80
    clips = [clip.tolist() for clip in waveforms]

    def run():
        for clip in clips:
            computer = knf.OnlineFbank(options)
            computer.accept_waveform(CONFIG.sample_rate, clip)
            computer.input_finished()
            np.stack([computer.get_frame(i) for i in range(computer.num_frames_ready)])

    return run


def h200_estimate() -> str:
    """Roofline of one 1 s clip: the float64 frame-to-power step is memory-bound."""
    frames, length, fft, bins = CONFIG.num_frames(CONFIG.sample_rate), CONFIG.frame_length, CONFIG.fft_length, 128
    flop64 = frames * (5 * length + 2.5 * fft * np.log2(fft) + 3 * (fft // 2 + 1))  # pre-processing, FFT, |.|^2
    flop32 = frames * 2 * (fft // 2 + 1) * bins + 3 * CONFIG.target_length * bins  # mel matmul, log, normalise
    bytes_moved = (4 * CONFIG.sample_rate  # waveform in
                   + 2 * 8 * frames * fft  # windowed float64 frames, written and read by the FFT
                   + 2 * 16 * frames * (fft // 2 + 1)  # complex128 spectrum, written and read
                   + 2 * 4 * frames * (fft // 2 + 1)  # float32 power spectrum
                   + 4 * CONFIG.target_length * bins)  # features out
    compute = flop64 / H200_FP64 + flop32 / H200_FP32
    memory = bytes_moved / H200_BYTES_PER_S
    return (f"H200 estimate per 1 s clip: {(flop64 + flop32) / 1e6:.1f} MFLOP ({flop64 / 1e6:.1f} in float64), "
            f"{bytes_moved / 1e6:.2f} MB moved -> memory-bound at {1 / max(compute, memory):,.0f} clips/s "
            f"(compute bound {1 / compute:,.0f}); at a typical 30-50% of bandwidth for FFT-sized kernels, "
            f"{0.3 / memory:,.0f}-{0.5 / memory:,.0f} clips/s in batches of 256 or more")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    speech = np.stack([sf.read(path, dtype="float32")[0] for path in sorted(CLIPS.glob("*.wav"))])
    for spectrum in ("float64", "float32"):
        ours = np.asarray(input_values(jax.device_put(speech), CONFIG, spectrum_dtype=spectrum))
        theirs = transformers_runner(speech)()["input_values"]
        difference = float(np.abs(ours - theirs).max())
        print(f"ast-jax ({spectrum} spectrum) against ASTFeatureExtractor on {len(speech)} real clips: largest "
              f"difference {difference:.1e}")
        if not difference <= 1e-4:
            raise SystemExit("the features differ by more than 1e-4: the timing would compare other computations")
    runners = {
        "ast-jax input_values (float64 spectrum)": lambda w: ast_jax_runner(w),
        "ast-jax input_values (float32 spectrum)": lambda w: ast_jax_runner(w, spectrum_dtype="float32"),
        "ast-jax float64, whole batch in jit": ast_jax_whole_batch_runner,
        "transformers ASTFeatureExtractor": transformers_runner,
        "kaldi-native-fbank (80 bins, log-mel only)": kaldi_native_fbank_runner,
    }
    rates: dict[str, dict[int, float]] = {name: {} for name in runners}
    for batch in args.batches:
        waveforms = np.resize(speech, (batch, speech.shape[1]))
        for name, make in runners.items():
            rates[name][batch] = clips_per_second(make(waveforms), batch, args.repeats)

    device = jax.devices()[0]
    print(f"1 s clips, {CONFIG.num_mel_bins} mel bins, {CONFIG.target_length} frames; ast-jax on "
          f"{device.platform} ({device.device_kind}), others on CPU; {os.cpu_count()} CPU cores")
    reference = rates["transformers ASTFeatureExtractor"]
    width = max(map(len, runners))
    header = "".join(f"{f'batch {b}':>22}" for b in args.batches)
    print(f"{'clips/s (x transformers)':<{width}}{header}")
    for name in runners:
        cells = "".join(f"{rates[name][b]:>12,.0f} ({rates[name][b] / reference[b]:5.1f}x)" for b in args.batches)
        print(f"{name:<{width}}{cells}")
    if device.platform == "cpu":
        print("No GPU here. " + h200_estimate())


if __name__ == "__main__":
    main()
