"""Cost-only replica pipelines: published sizes (FLOPs, parameters) and that they run end to end."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fad_edge.bench.pipelines.deca import DecaConfig, DecaPipeline, LSTMLayer, ViCoLSTM, resnet50
from fad_edge.bench.pipelines.layers import count_flops, count_params
from fad_edge.bench.pipelines.reactface import ReactFaceConfig, ReactFacePipeline

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def one_thread():
    """The benchmark machine is shared: keep every test on one core."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_resnet50_has_the_published_flops_and_parameters():
    model = resnet50().eval()  # with torchvision's 1000-way fc
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 3, 224, 224))
    assert 7.8e9 <= counter.get_total_flops() <= 8.6e9  # ~4.1 G multiply-adds
    assert 25.0e6 <= count_params(model) <= 26.0e6  # 25.56M
    assert 23.0e6 <= count_params(resnet50(num_classes=0)) <= 24.0e6  # the trunk DECA runs: 23.51M


def test_vico_lstm_flops_match_the_hand_count():
    """FlopCounterMode counts the fused nn.LSTM op as 0, so ViCoLSTM loops a cell of nn.Linear maps.

    Per layer and step: 2 * (in * 4h + h * 4h) for the input and hidden matmuls (the hidden map also
    runs at step 0, on the zero state, as nn.LSTM does); plus Linear 56->192 and Linear 96->56 per
    step. LayerNorm, Tanh and the gate nonlinearities are elementwise and not counted.
    """
    steps, dims, embed, hidden = 37, 56, 192, 96
    model = ViCoLSTM(dims, embed, hidden, layers=2).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = model(torch.randn(1, steps, dims))
    assert out.shape == (1, steps, dims)
    lstm = sum(2 * steps * (size * 4 * hidden + hidden * 4 * hidden) for size in (embed, hidden))
    linears = 2 * steps * (dims * embed + hidden * dims)
    assert counter.get_total_flops() == lstm + linears
    # Same parameters as the nn.LSTM it stands for.
    reference = nn.LSTM(embed, hidden, num_layers=2, batch_first=True)
    assert sum(count_params(layer) for layer in model.layers) == count_params(reference)


def test_lstm_layer_computes_what_nn_lstm_computes():
    torch.manual_seed(0)
    reference = nn.LSTM(12, 8, batch_first=True)
    layer = LSTMLayer(12, 8)
    with torch.no_grad():
        layer.input_map.weight.copy_(reference.weight_ih_l0)
        layer.input_map.bias.copy_(reference.bias_ih_l0)
        layer.hidden_map.weight.copy_(reference.weight_hh_l0)
        layer.hidden_map.bias.copy_(reference.bias_hh_l0)
        x = torch.randn(2, 5, 12)
        torch.testing.assert_close(layer(x), reference(x)[0])


def test_count_flops_includes_attention():
    """Plain FlopCounterMode misses the CPU attention kernel; count_flops adds both matmuls."""
    length, width, heads, ffn = 20, 64, 4, 128
    layer = nn.TransformerEncoderLayer(width, heads, ffn, dropout=0.0).eval()
    x = torch.randn(length, 1, width)
    projections = 2 * length * (4 * width * width + 2 * width * ffn)
    attention = 2 * 2 * length * length * width
    assert count_flops(lambda: layer(x)) == projections + attention


def test_deca_pipeline_runs_on_small_frames():
    config = DecaConfig(detector_size=(120, 160))
    pipeline = DecaPipeline(config=config).eval()
    with torch.no_grad():
        out = pipeline(torch.rand(2, 3, 120, 160))
    assert out.shape == (2, 56)
    assert torch.isfinite(out).all()


def test_deca_encoder_only_variant_skips_detector_and_landmarks():
    pipeline = DecaPipeline(with_detector_and_landmarks=False).eval()
    assert pipeline.detector is None and pipeline.landmarks is None
    frames = torch.rand(2, 3, 120, 160)
    with torch.no_grad():
        out = pipeline(frames)
    assert out.shape == (2, 56)
    flops = count_flops(lambda: pipeline(frames[:1]))
    assert 7.8e9 <= flops <= 8.6e9  # ResNet-50 trunk + DECA head + LSTM: ~8.2 GFLOPs per frame


def test_reactface_online_generates_one_motion_per_frame():
    config = ReactFaceConfig.reduced()
    pipeline = ReactFacePipeline(config).eval()
    steps = 8
    frames = torch.rand(steps, 3, config.image_size, config.image_size)
    audio = torch.randn(steps * config.sample_rate // 30)
    with torch.no_grad():
        online = pipeline.online(frames, audio)
        strict = pipeline.frame_by_frame(frames[:3], audio[: 3 * config.sample_rate // 30])
    assert online.shape == (steps, 58) and torch.isfinite(online).all()
    assert strict.shape == (3, 58) and torch.isfinite(strict).all()


def test_reactface_online_cost_grows_faster_than_the_session():
    """Every window re-encodes the speaker history: doubling the frames more than doubles the FLOPs."""
    config = ReactFaceConfig.reduced()
    pipeline = ReactFacePipeline(config).eval().to("meta")  # shapes only: counts without computing

    def flops(steps: int) -> int:
        frames = torch.empty(steps, 3, config.image_size, config.image_size, device="meta")
        audio = torch.empty(steps * config.sample_rate // 30, device="meta")
        return count_flops(lambda: pipeline.online(frames, audio))

    assert flops(32) > 3 * flops(16)


def test_reactface_flops_are_left_out_beyond_their_counting_limits(monkeypatch):
    import fad_edge.bench.run as bench_run

    monkeypatch.setitem(bench_run.REACTFACE_FLOPS_MAX, 8, 4)  # both windows over their limit at 8 frames
    monkeypatch.setitem(bench_run.REACTFACE_FLOPS_MAX, 1, 4)
    monkeypatch.setattr(bench_run, "reactface_flops", lambda *args: pytest.fail("counted past the limit"))
    rows = bench_run.replica_rows("reactface", 8, bench_run.BenchConfig(replica_max_frames=8), lambda _: None)
    assert [(row.pipeline, row.note) for row in rows] == [("reactface", "not counted beyond 4 frames"),
                                                          ("reactface-frame", "not counted beyond 4 frames")]
    assert all(row.latency is None and row.flops != row.flops for row in rows)  # NaN: no figure
