"""`python tests/fsdp_on_cpu.py ARGS` = `python -m metacanvas_core ARGS` with accelerate's FSDP path taken on the CPU.

accelerate takes its FSDP path only on accelerators: on a CPU its state stays MULTI_CPU (plain DDP) whatever the
config says. This switches the state to FSDP right after the Accelerator is made, with the plugin the launcher's
environment gives, so accelerate's own FSDP2 code (fully_shard with the auto-wrap policy, sharded save_state,
get_state_dict) runs in a gloo group. Used by tests/test_distributed_configs.py under `accelerate launch`."""

import sys
from pathlib import Path

import accelerate
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
_init = accelerate.Accelerator.__init__


def _fsdp_init(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* environment `accelerate launch` set
    if self.mixed_precision != "no":
        plugin.set_mixed_precision(self.mixed_precision)
    for state in (AcceleratorState(), PartialState()):
        state.distributed_type = DistributedType.FSDP
    AcceleratorState().fsdp_plugin = plugin


accelerate.Accelerator.__init__ = _fsdp_init

if __name__ == "__main__":
    from metacanvas_core.__main__ import main

    sys.exit(main(sys.argv[1:]))
