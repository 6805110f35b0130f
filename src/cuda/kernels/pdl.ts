// CUDA text for programmatic dependent launch (Hopper and later), which KernelSource.pdl asks the runtime for.

/**
 * A pdl kernel's first statement: wait until the kernel before it on the stream has finished and its
 * writes are visible (griddepcontrol.wait), then let the kernel after it launch
 * (griddepcontrol.launch_dependents), so that the next grid's blocks take the SMs this grid's last
 * wave leaves free and its launch latency passes while this grid finishes. It comes before any early
 * return: a grid all of whose blocks returned without waiting could finish before the grid it depends
 * on, and the grid after it would then not wait for that one. No-ops before sm_90 and in a plain launch.
 */
export const PDL_WAIT = `#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
`;
