"""A pretend GPU for test runs on a CPU: the device 'fakegpu', whose tensors hold CPU data and compute with
torch's CPU kernels but say they live on fakegpu:0. What a real GPU would expose shows here too:

- a fakegpu tensor mixed with a CPU tensor in one operation raises torch's "Expected all tensors to be on the
  same device" (a 0-d CPU tensor is allowed, as torch treats it as a number on every device);
- .numpy() of a fakegpu tensor raises, as of a CUDA tensor;
- every wait, where a CUDA device makes the host stop until the device has finished what was queued (a
  sync), is counted in `waits`, by kind:
    'read NAME'   a value read back to the host: .item(), bool(), int(), .tolist(), a copy to the CPU;
    'copy'        a copy to the device that blocks: from memory that is not pinned, or without
                  non_blocking=True (torch's copy is cudaMemcpyAsync, then a stream synchronisation);
    'size NAME'   an operation whose output size depends on the values (nonzero, boolean-mask indexing,
                  masked_select, bincount, repeat_interleave without output_size, unique): the host must
                  read the size before it can allocate the output;
- pinned host memory: inside the `pinned_memory()` context (the `fakegpu` fixture enters it), CPU tensors'
  .pin_memory() and .is_pinned() behave as with a CUDA device, so that a non-blocking copy from pinned
  memory is the one copy that does not wait;
- torch.autocast runs on it, casting nothing (its operations keep their inputs' dtype): the control flow of
  mixed precision, GradScaler's included, runs as on a GPU;
- the device has a random generator of its own, which torch.manual_seed reseeds as it does a GPU's, and
  torch.random.fork_rng(device_type='fakegpu') saves and restores (torch.fakegpu.get_rng_state()).

How: torch.utils.backend_registration names PrivateUse1, torch's slot for an out-of-tree device, 'fakegpu'
with a Python backend; the three operations that move data onto it (empty, empty_strided, _copy_from) are
registered for it with torch.library; every other operation on a FakeGpuTensor, a __torch_dispatch__ wrapper
around its CPU data, runs on that data and wraps the result again. (Not FakeTensorMode: bincount's
data-dependent shape stops it. Not a wrapper that claims 'cuda': indexing then starts the CUDA driver.)
Pinning takes a TorchFunctionMode: a Python backend cannot register torch's pinned-memory allocator, so the
mode answers pin_memory (a copy, remembered) and is_pinned (whether a tensor's memory is one of those).

    import fakegpu                # from tests/, via the `fakegpu` fixture of tests/conftest.py
    x = torch.ones(3).to('fakegpu')
    with fakegpu.counting_waits() as waits:
        float(x.sum())
    waits   # ['read _local_scalar_dense']

Registering a backend can happen once per process and cannot be undone; it changes nothing for other
devices.
"""
import contextlib

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.backend_registration import _setup_privateuseone_for_python_backend

NAME = 'fakegpu'
# aten operations that hand a device value to the host: on a GPU, each makes the host wait for the device.
HOST_READS = {'_local_scalar_dense', 'is_nonzero', 'equal'}
# aten operations whose output size depends on the values: the host reads the size, so it waits too.
DATA_DEPENDENT_SIZE = {'nonzero', 'masked_select', 'unique', '_unique', '_unique2', 'unique_consecutive', 'unique_dim',
                       'bincount'}
waits = []
pinned = {}  # data_ptr of a pinned host tensor's memory -> the tensor (kept alive while it counts as pinned)


class FakeGpuTensor(torch.Tensor):
    """A tensor on fakegpu:0 whose values are the CPU tensor `cpu_data`."""

    @staticmethod
    def __new__(cls, cpu_data):
        t = torch.Tensor._make_wrapper_subclass(cls, cpu_data.shape, strides=cpu_data.stride(),
                                                storage_offset=cpu_data.storage_offset(), dtype=cpu_data.dtype,
                                                device=DEVICE, requires_grad=False)
        t.cpu_data = cpu_data
        return t

    def __repr__(self):
        return f"FakeGpuTensor({self.cpu_data})"

    # Not dispatched to __torch_dispatch__ for a subclass; as a CUDA tensor's:
    def tolist(self):
        waits.append('read tolist')
        return self.cpu_data.tolist()

    def numpy(self, *, force=False):
        raise TypeError(f"can't convert {DEVICE} device type tensor to numpy. Use Tensor.cpu() to copy the "
                        f"tensor to host memory first.")

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        wrappers = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, FakeGpuTensor)]
        cpu = [t for t in tree_flatten((args, kwargs))[0]
               if type(t) is torch.Tensor and t.device.type == 'cpu' and t.dim() > 0]
        if cpu and wrappers and name not in ('_to_copy', 'copy_', '_copy_from'):
            raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                               f"{DEVICE} and cpu! (in {func})")
        to_host = name == '_to_copy' and torch.device(kwargs.get('device') or DEVICE).type == 'cpu'
        into_host = name == 'copy_' and not isinstance(args[0], FakeGpuTensor)
        if name in HOST_READS or to_host or into_host:
            waits.append(f'read {name}')
        onto_device = (name == 'copy_' and isinstance(args[0], FakeGpuTensor) and type(args[1]) is torch.Tensor
                       and args[1].device.type == 'cpu')
        non_blocking = args[2] if len(args) > 2 else kwargs.get('non_blocking', False)
        if onto_device and not (non_blocking and is_pinned(args[1])):
            waits.append('copy')
        if name in DATA_DEPENDENT_SIZE or data_dependent_indexing(name, args, kwargs):
            waits.append(f'size {name}')
        unwrap = lambda v: (v.cpu_data if isinstance(v, FakeGpuTensor)
                            else torch.device('cpu') if isinstance(v, torch.device) and v.type == NAME else v)
        out = func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs))
        if to_host:
            return out
        # An in-place operation returns its input: hand back the wrapper it came in, not a new one.
        by_data = {id(w.cpu_data): w for w in wrappers}
        wrap = lambda v: (by_data[id(v)] if id(v) in by_data else FakeGpuTensor(v)) if type(v) is torch.Tensor else v
        return tree_map(wrap, out)


def data_dependent_indexing(name, args, kwargs):
    """Whether an operation's output size (or, for index_put, its work) is read from the values: indexing
    or assigning through a boolean mask (torch turns the mask into indices with nonzero), repeat_interleave
    of a tensor of repeats without output_size."""
    if name in ('index', 'index_put', 'index_put_', '_index_put_impl_'):
        indices = args[1] if len(args) > 1 else kwargs.get('indices', ())
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ())
    if name == 'repeat_interleave':
        repeats = args[1] if len(args) > 1 else kwargs.get('repeats', args[0] if args else None)
        return isinstance(repeats, torch.Tensor) and kwargs.get('output_size') is None
    return False


class PinnedMemory(TorchFunctionMode):
    """CPU tensors' pin_memory and is_pinned as a CUDA device makes them (see the module docstring)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.pin_memory:
            copy = args[0].clone()
            pinned[copy.untyped_storage().data_ptr()] = copy
            return copy
        if func is torch.Tensor.is_pinned:
            return is_pinned(args[0])
        return func(*args, **kwargs)


def is_pinned(tensor):
    return type(tensor) is torch.Tensor and tensor.untyped_storage().data_ptr() in pinned


@contextlib.contextmanager
def pinned_memory():
    """Inside: pinned host memory, as with a CUDA device; the memory pinned is forgotten after."""
    with PinnedMemory():
        try:
            yield
        finally:
            pinned.clear()


class Backend:
    """torch.fakegpu: what torch asks of a device's module (how many there are, their random generator)."""

    def __init__(self):
        self.generator = torch.Generator()  # the device's generator (nothing draws from it but tests)

    is_available = staticmethod(lambda: True)
    device_count = staticmethod(lambda: 1)
    current_device = staticmethod(lambda: 0)
    _is_in_bad_fork = staticmethod(lambda: False)
    get_amp_supported_dtype = staticmethod(lambda: [torch.float16, torch.bfloat16])

    def manual_seed_all(self, seed):
        self.generator.manual_seed(seed)

    manual_seed = manual_seed_all

    def get_rng_state(self, device=None):
        return self.generator.get_state()

    def set_rng_state(self, state, device=None):
        self.generator.set_state(state)



@contextlib.contextmanager
def counting_waits():
    """Collects the waits made inside the block ('read NAME', 'copy', 'size NAME')."""
    start = len(waits)
    collected = []
    try:
        yield collected
    finally:
        collected.extend(waits[start:])


def _register():
    _setup_privateuseone_for_python_backend(NAME, backend_module=Backend())
    global DEVICE
    DEVICE = torch.device(NAME, 0)  # a device string torch accepts only once the backend has its name

    @torch.library.impl('aten::empty.memory_format', 'privateuseone')
    def empty(size, *, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None):
        return FakeGpuTensor(torch.empty(size, dtype=dtype, memory_format=memory_format or torch.contiguous_format))

    @torch.library.impl('aten::empty_strided', 'privateuseone')
    def empty_strided(size, stride, *, dtype=None, layout=None, device=None, pin_memory=None):
        return FakeGpuTensor(torch.empty_strided(size, stride, dtype=dtype))

    # torch.autocast on the device: nothing is cast (every operation falls through to its own kernel, in its
    # inputs' dtype), so that mixed precision's control flow, GradScaler's included, runs here.
    global AUTOCAST
    AUTOCAST = torch.library.Library('_', 'IMPL', 'AutocastPrivateUse1')
    AUTOCAST.fallback(torch.library.fallthrough_kernel)

    @torch.library.impl('aten::_copy_from', 'privateuseone')
    def copy_from(source, destination, non_blocking=False):  # host to device (the other way is dispatched above)
        if not (non_blocking and is_pinned(source)):
            waits.append('copy')
        destination.cpu_data.copy_(source)
        return destination


_register()
