// Uses a little of everything dsv4 exports, so that a broken include path or a missing header in
// the installed tree fails this build.
#include <dsv4/dsv4.hpp>

#include <cstdio>

#if defined(CONSUMER_WITH_CUDA)
int cuda_part();  // cuda_part.cu
#endif
#if defined(CONSUMER_WITH_TEXT)
int text_part();  // text_part.cpp
#endif

int main() {
  constexpr auto flash = dsv4::config::v4_flash;
  static_assert(flash.d_model == 4096);
  const float x = dsv4::bf16(1.5f).to_float();
  if (x != 1.5f) return 1;
#if defined(CONSUMER_WITH_CUDA)
  if (cuda_part() != 0) return 1;
#endif
#if defined(CONSUMER_WITH_TEXT)
  if (text_part() != 0) return 1;
#endif
  std::printf("consumer: dsv4 %s ok\n", DSV4_VERSION_STRING);
  return 0;
}
