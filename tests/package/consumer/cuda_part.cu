// Compiles dsv4's CUDA umbrella with nvcc in the consumer's build; runs nothing on a GPU.
#include <dsv4/cuda.cuh>

int cuda_part() { return dsv4::cuda<90>::arch == 90 ? 0 : 1; }
