"""torch.compile of a wrapped model: the same outputs and the same training steps as eager.

Under ``torch.compile`` the codebook forward (``CodebookWeight.forward``) runs eagerly through
``torch.compiler.disable``: one graph break per quantized layer per call, and no other. Its cache key is
tensor identities and version counters (``torch.is_inference_mode_enabled``, ``id``, ``_version``), which
dynamo cannot trace and whose id guards made it recompile for every layer; the cache and re-seeding mutate
Python state; re-seeding is a data-dependent loop. The convolutions, neurons and loss are compiled
(README "torch.compile").
"""

import copy
import shutil

import pytest
import torch

import snn_spikefit as sf

from conftest import needs_snntorch

pytestmark = [needs_snntorch, pytest.mark.slow]


@pytest.fixture
def compiled():
    if not hasattr(torch, "compile") or shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("torch.compile (inductor on the CPU) needs a C compiler, and none is on PATH")
    from snn_spikefit.zoo.snntorch import conv_snn

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = sf.wrap(conv_snn(1, 5, 8, (4, 6)), m=4)
    with torch.no_grad():
        model[0].weight.mul_(3)
    yield model
    torch._dynamo.reset()


def test_compiled_wrapped_model_matches_eager_forward_and_training(compiled):
    g = torch.Generator().manual_seed(1)
    data = [(torch.rand(4, 1, 8, 8, generator=g), torch.randint(0, 5, (4,), generator=g)) for _ in range(2)]
    eager = copy.deepcopy(compiled)
    fast = torch.compile(copy.deepcopy(compiled))
    with torch.no_grad():
        assert torch.equal(sf.run(fast, data[0][0], num_steps=3), sf.run(eager, data[0][0], num_steps=3))
    h_eager = sf.fit(eager, data, epochs=1, num_steps=3, progress=False,
                     optimizer=torch.optim.SGD(eager.parameters(), lr=0.1))
    h_fast = sf.fit(fast, data, epochs=1, num_steps=3, progress=False,
                    optimizer=torch.optim.SGD(fast.parameters(), lr=0.1))
    assert h_fast == h_eager
    after = fast._orig_mod.state_dict()
    for k, v in eager.state_dict().items():
        torch.testing.assert_close(after[k], v, rtol=1e-6, atol=1e-7)


def test_the_only_graph_breaks_are_the_eager_codebook_forwards(compiled):
    import torch._dynamo as dynamo

    sf.reset(compiled)
    explained = dynamo.explain(compiled)(torch.rand(4, 1, 8, 8))
    reasons = [str(b.reason) for b in explained.break_reasons]
    assert all("disable" in r for r in reasons), reasons
    assert explained.graph_break_count <= len(sf.quantize.layers.compressed_layers(compiled))
