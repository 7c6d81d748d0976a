"""Training augmentation: one draw per window, label-preserving, reproducible."""

import pytest
import torch

from fad_edge.data.audio_features import SILENCE
from fad_edge.data.augment import AugmentConfig, augment_batch, augment_images, augment_mel
from fad_edge.train_batches import augment_step


def _batch(windows: int = 4, frames: int = 6) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(windows, 1, 3, 16, 16, generator=generator).expand(windows, frames, 3, 16, 16).clone()
    mel = torch.rand(windows, 1, 1, 8, 20, generator=generator) * 1.2 + SILENCE
    mel = mel.expand(windows, frames, 1, 8, 20).clone()
    mel[..., :2, :] = SILENCE
    return {"images": image, "mel": mel, "motion": torch.randn(windows, frames, 56, generator=generator)}


def test_every_frame_of_a_window_gets_the_same_change_and_windows_differ():
    batch = _batch()
    out = augment_batch(batch, torch.Generator().manual_seed(1))
    for key in ("images", "mel"):
        assert torch.equal(out[key], out[key][:, :1].expand_as(out[key]))  # identical frames stay identical
        changes = (out[key] - batch[key])[:, 0].flatten(1)
        assert not torch.allclose(changes[0], changes[1])
    assert out["motion"] is batch["motion"]


def test_same_generator_seed_same_augmentation():
    batch = _batch()
    a = augment_batch(batch, torch.Generator().manual_seed(7))
    b = augment_batch(batch, torch.Generator().manual_seed(7))
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["mel"], b["mel"])


def test_images_stay_in_range_and_a_shift_moves_a_pixel_by_at_most_max_shift():
    images = torch.zeros(3, 2, 3, 21, 21)
    images[..., 10, 10] = 1.0
    config = AugmentConfig(channel_gain=0.0, brightness=0.0, contrast=0.0, max_shift=3)
    out = augment_images(images, torch.Generator().manual_seed(3), config)
    assert out.min() >= 0 and out.max() <= 1
    for window in out:
        y, x = divmod(int(window[0, 0].argmax()), 21)
        assert abs(y - 10) <= 3 and abs(x - 10) <= 3
        assert float(window[0, 0].sum()) == 1.0  # moved, not smeared


def test_mel_gain_keeps_silence_and_the_mask_is_one_band_of_silence():
    mel = _batch()["mel"]
    gain_only = augment_mel(mel, torch.Generator().manual_seed(2), AugmentConfig(mel_mask=0))
    silent = mel == SILENCE
    assert torch.equal(gain_only[silent], mel[silent])
    delta = (gain_only - mel)[~silent]
    assert delta.abs().max() <= 6.0 / 40 + 1e-6
    masked = augment_mel(mel, torch.Generator().manual_seed(2), AugmentConfig(audio_gain_db=0.0, mel_mask=8))
    for window in masked:
        band = (window[0, 0] == SILENCE).all(dim=0)  # mel bins silent at every time step
        bins = torch.nonzero(band).flatten()
        assert len(bins) <= 8
        if len(bins):
            assert int(bins[-1] - bins[0]) == len(bins) - 1  # contiguous


def test_a_training_step_draws_its_own_augmentation_whatever_process_runs_it():
    batch = _batch()
    first, again = augment_step(batch, seed=3, rank=0, step=5), augment_step(batch, seed=3, rank=0, step=5)
    assert torch.equal(first["images"], again["images"]) and torch.equal(first["mel"], again["mel"])
    for other in (augment_step(batch, seed=3, rank=0, step=6), augment_step(batch, seed=3, rank=1, step=5)):
        assert not torch.equal(first["images"], other["images"])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_batch_on_the_gpu_is_augmented_as_on_the_cpu():
    batch = _batch()
    on_cpu = augment_step(batch, seed=3, rank=0, step=5)
    on_gpu = augment_step({key: value.cuda() for key, value in batch.items()}, seed=3, rank=0, step=5)
    for key in ("images", "mel"):
        assert on_gpu[key].is_cuda
        torch.testing.assert_close(on_gpu[key].cpu(), on_cpu[key], rtol=1e-6, atol=1e-6)


def test_a_training_step_shifts_only_when_its_augmentation_asks():
    batch = _batch()
    still = AugmentConfig(channel_gain=0.0, brightness=0.0, contrast=0.0)
    assert still.max_shift == 0 and AugmentConfig().max_shift == 0  # no shift by default
    unshifted = augment_step(batch, seed=3, rank=0, step=5, config=still)["images"]
    torch.testing.assert_close(unshifted, batch["images"].clamp(0.0, 1.0))
    shifted = augment_step(batch, seed=3, rank=0, step=5, config=AugmentConfig(
        channel_gain=0.0, brightness=0.0, contrast=0.0, max_shift=3))["images"]
    assert not torch.equal(shifted, unshifted)
