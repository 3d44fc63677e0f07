//! The LibTorch device of a torch stage: what the scheduler assigned, if the worker can
//! use it. One place, so every torch kind falls back and reports alike.

use pipe_core::stage::{Context, Device};
use tch::Device as TDevice;

/// The LibTorch device for the scheduler's assignment, and its name for the summary; a
/// CUDA assignment without CUDA in the worker falls back to the CPU with a log line.
pub fn device_for(ctx: &Context) -> (TDevice, String) {
    let device = match ctx.device {
        Device::Cuda(i) if tch::Cuda::is_available() => TDevice::Cuda(i),
        Device::Cuda(i) => {
            ctx.log(format!(
                "cuda:{i} was assigned but CUDA is not available in the worker; running on the CPU"
            ));
            TDevice::Cpu
        }
        Device::Cpu => {
            ctx.log("no GPU assigned; running on the CPU");
            TDevice::Cpu
        }
    };
    let used = match device {
        TDevice::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".to_string(),
    };
    (device, used)
}
