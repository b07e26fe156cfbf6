// Linked with -Wl,--wrap=mmap: every file mapping the code under test makes (guest RAM) gets
// a PROT_NONE page on each side, so a device that reads or writes even one byte outside guest
// memory crashes the test instead of silently touching a neighbouring mapping. (ASan does not
// watch mmap'd memory; this does.)
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>

extern "C" void* __real_mmap(void* addr, size_t len, int prot, int flags, int fd, off_t offset);

extern "C" void* __wrap_mmap(void* addr, size_t len, int prot, int flags, int fd,
                             off_t offset) {
  if (addr != nullptr || fd < 0 || (flags & MAP_FIXED)) {
    return __real_mmap(addr, len, prot, flags, fd, offset);
  }
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t rounded = (len + page - 1) / page * page;
  void* area = __real_mmap(nullptr, rounded + 2 * page, PROT_NONE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (area == MAP_FAILED) return area;
  void* inner = __real_mmap(static_cast<char*>(area) + page, len, prot, flags | MAP_FIXED, fd,
                            offset);
  if (inner == MAP_FAILED) munmap(area, rounded + 2 * page);
  return inner;  // the guard pages stay reserved for the life of the test process
}
