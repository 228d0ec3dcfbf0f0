// A set of 128-bit hashes: dedupe's live event ids, every one of them inserted once and
// erased once it expires, millions of them live (10 minutes of input), so nearly every
// operation is a cache miss. Built for that:
//   - open addressing with linear probing and the hashes stored inline (16 bytes a slot,
//     no separate control bytes): inserting a new id touches one cache line where a
//     Swiss table (control bytes, then the slot) touches two, and so does an erase;
//   - erase shifts the entries behind the hole back (no tombstones): a set that sees as
//     many erases as inserts does not fill up with deleted slots;
//   - Prefetch(id): the caller that knows its next ids ahead (expiry, in first-seen
//     order) hides the miss of the erase behind other work;
// The slot of an id comes from its low 64 bits multiplied by a per-process random odd
// number (the top bits): the hashes come from input (event ids), and a fixed mapping
// could be flooded by ids crafted to share slots. {0, 0} marks an empty slot; an id
// that hashes to {0, 0} is stored as {1, 0} (the two are then one id: a 2^-128 chance).
// Load factor at most 3/4; the table doubles when it would pass that and never shrinks.
#ifndef STREAMMETRICS_OPERATORS_ID_SET_H_
#define STREAMMETRICS_OPERATORS_ID_SET_H_

#include <sys/mman.h>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>

#include "operators/hash.h"

namespace streammetrics {

class IdSet {
 public:
  IdSet() = default;
  IdSet(const IdSet&) = delete;
  IdSet& operator=(const IdSet&) = delete;
  ~IdSet() { Free(slots_, capacity()); }

  size_t size() const { return size_; }
  size_t capacity() const { return mask_ + 1; }

  // False when `id` was already in the set.
  bool Insert(Hash128 id) {
    Normalize(&id);
    if (size_ + 1 > (capacity() >> 2) * 3) Grow();
    for (size_t i = Home(id);; i = (i + 1) & mask_) {
      Hash128& s = slots_[i];
      if (s == id) return false;
      if (IsEmpty(s)) {
        s = id;
        ++size_;
        return true;
      }
    }
  }

  bool Contains(Hash128 id) const {
    Normalize(&id);
    if (size_ == 0) return false;
    for (size_t i = Home(id);; i = (i + 1) & mask_) {
      if (slots_[i] == id) return true;
      if (IsEmpty(slots_[i])) return false;
    }
  }

  // False when `id` was not in the set.
  bool Erase(Hash128 id) {
    Normalize(&id);
    if (size_ == 0) return false;
    size_t hole = Home(id);
    for (;; hole = (hole + 1) & mask_) {
      if (slots_[hole] == id) break;
      if (IsEmpty(slots_[hole])) return false;
    }
    // Backward shift: an entry after the hole moves into it unless its home lies
    // cyclically in (hole, at] (then it is still reachable from its home).
    for (size_t at = (hole + 1) & mask_; !IsEmpty(slots_[at]); at = (at + 1) & mask_) {
      const size_t home = Home(slots_[at]);
      const bool stays = hole <= at ? (hole < home && home <= at) : (hole < home || home <= at);
      if (!stays) {
        slots_[hole] = slots_[at];
        hole = at;
      }
    }
    slots_[hole] = Hash128{};
    --size_;
    return true;
  }

  // A hint: `id`'s first slot will be read soon.
  void Prefetch(Hash128 id) const {
    if (slots_ != nullptr) {
      Normalize(&id);
      __builtin_prefetch(&slots_[Home(id)], 1);
    }
  }

 private:
  static constexpr size_t kInitialCapacity = 1024;
  static constexpr size_t kMapped = size_t{1} << 20;  // bytes: tables this large are mmapped

  static void Normalize(Hash128* id) {
    if (id->lo == 0 && id->hi == 0) id->lo = 1;
  }
  static bool IsEmpty(const Hash128& s) { return s.lo == 0 && s.hi == 0; }
  static uint64_t Salt() {
    static const uint64_t salt = [] {
      std::random_device rd;
      return ((static_cast<uint64_t>(rd()) << 32) ^ rd()) | 1;
    }();
    return salt;
  }
  size_t Home(const Hash128& id) const { return static_cast<size_t>((id.lo * salt_) >> shift_); }

  // Zeroed slots for `capacity` (a power of two). Large tables are mapped with their
  // pages populated in one call: faulting them in one by one as the rehash touches them
  // costs a page fault per 256 slots (expensive on a VM). (Transparent huge pages, asked
  // for with madvise, made the pipeline's dedupe stage ~1.5x slower here: the kernel
  // compacts memory on the fault.) Aborts when out of memory, as operator new would.
  static Hash128* Allocate(size_t capacity) {
    const size_t bytes = capacity * sizeof(Hash128);
    void* p = nullptr;
    if (bytes >= kMapped) {
      p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
      if (p == MAP_FAILED) p = nullptr;
    } else {
      p = std::calloc(capacity, sizeof(Hash128));
    }
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<Hash128*>(p);
  }
  static void Free(Hash128* slots, size_t capacity) {
    if (slots == nullptr) return;
    const size_t bytes = capacity * sizeof(Hash128);
    if (bytes >= kMapped) {
      ::munmap(slots, bytes);
    } else {
      std::free(slots);
    }
  }

  void Grow() {
    const size_t old_capacity = slots_ == nullptr ? 0 : capacity();
    const size_t capacity = old_capacity == 0 ? kInitialCapacity : 2 * old_capacity;
    Hash128* old = slots_;
    slots_ = Allocate(capacity);
    mask_ = capacity - 1;
    shift_ = 64 - std::countr_zero(capacity);
    // Moves in groups whose target slots are prefetched first: each one is a miss.
    constexpr size_t kGroup = 8;
    Hash128 group[kGroup];
    size_t n = 0;
    auto place = [&] {
      for (size_t g = 0; g < n; ++g) {
        for (size_t i = Home(group[g]);; i = (i + 1) & mask_) {
          if (IsEmpty(slots_[i])) {
            slots_[i] = group[g];
            break;
          }
        }
      }
      n = 0;
    };
    for (size_t i = 0; i < old_capacity; ++i) {
      if (IsEmpty(old[i])) continue;
      group[n] = old[i];
      __builtin_prefetch(&slots_[Home(group[n])], 1);
      if (++n == kGroup) place();
    }
    place();
    Free(old, old_capacity);
  }

  Hash128* slots_ = nullptr;
  size_t mask_ = 0;  // capacity - 1 (0 before the first insert)
  int shift_ = 64;
  size_t size_ = 0;
  uint64_t salt_ = Salt();
};

}  // namespace streammetrics

#endif  // STREAMMETRICS_OPERATORS_ID_SET_H_
