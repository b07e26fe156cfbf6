#include <cstring>

#include "devices/virtio/rng.h"
#include "harness.h"
#include "test_framework.h"

using namespace smolvm::virtio;
using namespace vtest;

TEST(rng_fills_buffers) {
  Harness h(MakeVirtioRng());
  REQUIRE(h.Init() & kStatusDriverOk);
  GuestAddress a = h.Alloc(4096), b = h.Alloc(4096);
  h.queues[0]->Add({{a, 1000, true}, {a + 1000, 3096, true}});
  h.queues[0]->Add({{b, 4096, true}});
  h.Notify(0);
  auto first = h.queues[0]->PopUsed();
  auto second = h.queues[0]->PopUsed();
  REQUIRE(first && second);
  CHECK_EQ(first->len, 4096u);
  CHECK_EQ(second->len, 4096u);
  std::vector<uint8_t> x = h.Peek(a, 4096), y = h.Peek(b, 4096);
  CHECK(x != y);
  CHECK(x != std::vector<uint8_t>(4096, 0));
}

TEST(rng_caps_huge_requests) {
  Harness h(MakeVirtioRng());
  h.Init();
  GuestAddress a = h.Alloc(1 << 20);
  h.queues[0]->Add({{a, 1 << 20, true}});
  h.Notify(0);
  auto used = h.queues[0]->PopUsed();
  REQUIRE(used);
  CHECK_EQ(uint64_t{used->len}, kRngMaxBytesPerRequest);
}

TEST(rng_readable_only_buffer_gets_nothing) {
  Harness h(MakeVirtioRng());
  h.Init();
  GuestAddress a = h.Alloc(64);
  h.queues[0]->Add({{a, 64, false}});
  h.Notify(0);
  auto used = h.queues[0]->PopUsed();
  REQUIRE(used);
  CHECK_EQ(used->len, 0u);
  CHECK(!h.NeedsReset());
}
