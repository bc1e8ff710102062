"""torch.func transforms through cellstate.LSTM / RNN on backend="auto" (grad, vjp, jacrev,
vmap over inputs, vmap over stacked parameters as in PyTorch's model-ensembling tutorial),
each against the same quantity computed without the transform by ordinary calls and
torch.autograd on the CPU kernel."""

import pytest
import torch
from torch import func

import cellstate
from cellstate.kernels.cpu import ops
from tests.differential import tolerance

F64 = torch.float64
T, B, D, H, N = 4, 3, 2, 3, 3
TOL = tolerance(F64)
MODULES = {
    "lstm": lambda: cellstate.LSTM(D, H, num_layers=2, bidirectional=True, dtype=F64),
    "lstm_variants": lambda: cellstate.LSTM(
        D, H, proj_size=2, peephole=True, layer_norm=True, dtype=F64
    ).eval(),
    "rnn": lambda: cellstate.RNN(D, H, num_layers=2, dtype=F64),
}


def _loss(module, params: dict, x):
    return func.functional_call(module, params, (x,))[0].pow(2).sum()


@pytest.fixture(params=list(MODULES))
def module(request):
    return MODULES[request.param]()


def test_grad_over_parameters(module):
    params = {n: p.detach() for n, p in module.named_parameters()}
    x = torch.randn(T, B, D, dtype=F64)
    got = func.grad(lambda p: _loss(module, p, x))(params)
    expected = torch.autograd.grad(_loss(module, dict(module.named_parameters()), x), [
        *module.parameters()
    ])  # fmt: skip
    for (name, g), e in zip(got.items(), expected, strict=True):
        torch.testing.assert_close(g, e, **TOL, msg=name)


def test_vjp_over_input(module):
    x = torch.randn(T, B, D, dtype=F64)
    out, vjp_fn = func.vjp(lambda x: module(x)[0], x)
    cotangent = torch.randn_like(out)
    (got,) = vjp_fn(cotangent)
    leaf = x.clone().requires_grad_()
    expected_out = module(leaf)[0]
    (expected,) = torch.autograd.grad(expected_out, leaf, cotangent)
    torch.testing.assert_close(out, expected_out.detach(), **TOL)
    torch.testing.assert_close(got, expected, **TOL)


def test_jacrev_over_input(module):
    x = torch.randn(T, 1, D, dtype=F64)
    got = func.jacrev(lambda x: module(x)[1][0].sum(0))(x)  # d h_n / dx
    expected = torch.autograd.functional.jacobian(lambda x: module(x)[1][0].sum(0), x)
    torch.testing.assert_close(got, expected, **TOL)


def test_vmap_over_inputs(module):
    xs = torch.randn(N, T, B, D, dtype=F64)
    got = func.vmap(lambda x: module(x)[0])(xs)
    expected = torch.stack([module(x)[0] for x in xs])
    torch.testing.assert_close(got, expected, **TOL)


def test_vmap_over_stacked_parameters_model_ensembling():
    """The model-ensembling recipe: stack_module_state + functional_call under vmap."""
    models = [cellstate.LSTM(D, H, num_layers=2, peephole=True, dtype=F64) for _ in range(N)]
    params, buffers = func.stack_module_state(models)
    base = cellstate.LSTM(D, H, num_layers=2, peephole=True, dtype=F64, device="meta")

    def run(params, buffers, x):
        return func.functional_call(base, (params, buffers), (x,))[0]

    x = torch.randn(T, B, D, dtype=F64)
    got = func.vmap(run, in_dims=(0, 0, None))(params, buffers, x)
    expected = torch.stack([m(x)[0] for m in models])
    torch.testing.assert_close(got, expected, **TOL)
    # and the ensemble's parameter gradients, vmapped over models
    grads = func.vmap(func.grad(lambda p, b, x: run(p, b, x).pow(2).sum()), in_dims=(0, 0, None))(
        params, buffers, x
    )
    for k, m in enumerate(models):
        m(x)[0].pow(2).sum().backward()
        for name, p in m.named_parameters():
            torch.testing.assert_close(grads[name][k], p.grad, **TOL, msg=name)


def test_backend_cpu_under_a_transform_names_the_alternative():
    module = cellstate.LSTM(D, H, dtype=F64, backend="cpu")
    x = torch.randn(T, B, D, dtype=F64)
    with pytest.raises(RuntimeError, match="backend='cpu' cannot run.*torch.func.*reference"):
        func.vmap(lambda x: module(x)[0])(x.unsqueeze(0))
    assert ops.unsupported(x) is None  # outside the transform the kernel runs


def test_hessian_matches_double_backward_through_the_kernel(module):
    """func.hessian (forward-over-reverse, on the reference) against
    torch.autograd.functional.hessian (double backward through the kernel)."""
    x = torch.randn(T, 1, D, dtype=F64)

    def f(x):
        return module(x)[0].pow(2).sum()

    torch.testing.assert_close(func.hessian(f)(x), torch.autograd.functional.hessian(f, x), **TOL)


def test_tensors_escaping_a_finished_transform_run_on_the_kernel(module):
    # A tensor captured inside func.grad and used after it is a dead wrapper with no storage;
    # Function.apply and torch's ops read the tensor it wraps. Both the input (and state) and
    # functional_call's parameters: the kernel crashed on either ("Cannot access data pointer").
    x = torch.randn(T, B, D, dtype=F64)
    h0 = torch.randn(module.num_layers * module.num_directions, B, H, dtype=F64)
    state = h0 if isinstance(module, cellstate.RNN) else (h0[..., : module.proj_size or H], h0)
    captured = {}

    def loss(params, x, h0):
        captured.update(params, x=x, h0=h0)
        return _loss(module, params, x)

    func.grad(loss)({n: p.detach() for n, p in module.named_parameters()}, x, h0)
    dead_x, dead_h0 = captured.pop("x"), captured.pop("h0")
    assert torch._C._functorch.is_functorch_wrapped_tensor(dead_x)
    dead_state = dead_h0 if isinstance(module, cellstate.RNN) else (state[0], dead_h0)
    with torch.no_grad():
        expected = module(x, state)
    for got in (
        module(dead_x, dead_state),
        func.functional_call(module, captured, (x, state)),
    ):
        torch.testing.assert_close(got[0], expected[0], **TOL)
