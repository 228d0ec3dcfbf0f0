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
// Doubling is incremental: the new table takes every insert while each operation moves
// a few runs of the old one across (whole runs, so what stays behind is still found by
// linear probing), and the move is done long before the new table could fill — a set
// of tens of millions of ids (10 minutes of input at 100K/s) never stops its thread
// for the seconds a rehash of everything at once took.
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
  ~IdSet() {
    Free(table_);
    Free(old_);
  }

  size_t size() const { return size_; }
  size_t capacity() const { return table_.capacity(); }
  // An old table is still being moved into the current one.
  bool growing() const { return old_.slots != nullptr; }

  // False when `id` was already in the set.
  bool Insert(Hash128 id) {
    Normalize(&id);
    if (growing()) {
      // Both tables' slots are misses: fetched together, behind the move.
      __builtin_prefetch(&old_.slots[old_.Home(id)]);
      __builtin_prefetch(&table_.slots[table_.Home(id)], 1);
      Move(kMovePerOp);
      if (growing() && old_.Find(id) != kNone) return false;
    }
    if (size_ + 1 > (capacity() >> 2) * 3) {
      // Is it here already? Once grown, the current table is the old one, which the
      // probe below does not look in: a duplicate whose insert made the set grow was
      // taken for new (once per doubling; found by the repartition tests, where the
      // oracle's and the tasks' sets grew at different ids).
      if (table_.Find(id) != kNone) return false;
      Grow();
    }
    for (size_t i = table_.Home(id);; i = (i + 1) & table_.mask) {
      Hash128& s = table_.slots[i];
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
    return table_.Find(id) != kNone || (growing() && old_.Find(id) != kNone);
  }

  // False when `id` was not in the set.
  bool Erase(Hash128 id) {
    Normalize(&id);
    if (size_ == 0) return false;
    if (growing()) {
      __builtin_prefetch(&old_.slots[old_.Home(id)], 1);
      __builtin_prefetch(&table_.slots[table_.Home(id)], 1);
      Move(kMovePerOp);
    }
    bool erased = table_.Erase(id);
    if (!erased && growing()) erased = old_.Erase(id);
    if (!erased) return false;
    --size_;
    return true;
  }

  // A hint: `id`'s first slot will be read soon.
  void Prefetch(Hash128 id) const {
    if (table_.slots != nullptr) {
      Normalize(&id);
      __builtin_prefetch(&table_.slots[table_.Home(id)], 1);
      if (growing()) __builtin_prefetch(&old_.slots[old_.Home(id)], 1);
    }
  }

 private:
  static constexpr size_t kInitialCapacity = 1024;
  static constexpr size_t kMapped = size_t{1} << 20;    // bytes: tables this large are mmapped
  static constexpr size_t kPopulated = size_t{1} << 26; // ... and populated up to this size
  // Old slots moved per insert or erase (at least; a run is moved whole). The move must
  // end before the new table is 3/4 full: it starts 3/8 full, so 3/8 of its capacity —
  // 3/4 of the old one's — in inserts; 16 slots each is done after 1/16. (The sooner it
  // ends the better: while it lasts, every insert also looks in the old table.)
  static constexpr size_t kMovePerOp = 16;
  static constexpr size_t kNone = ~size_t{0};

  struct Table {
    Hash128* slots = nullptr;
    size_t mask = 0;  // capacity - 1 (0 without slots)
    int shift = 64;
    uint64_t salt = 0;

    size_t capacity() const { return slots == nullptr ? 0 : mask + 1; }
    size_t Home(const Hash128& id) const {
      return static_cast<size_t>((id.lo * salt) >> shift);
    }
    size_t Find(const Hash128& id) const {
      if (slots == nullptr) return kNone;
      for (size_t i = Home(id);; i = (i + 1) & mask) {
        if (slots[i] == id) return i;
        if (IsEmpty(slots[i])) return kNone;
      }
    }
    bool Erase(const Hash128& id) {
      size_t hole = Find(id);
      if (hole == kNone) return false;
      // Backward shift: an entry after the hole moves into it unless its home lies
      // cyclically in (hole, at] (then it is still reachable from its home).
      for (size_t at = (hole + 1) & mask; !IsEmpty(slots[at]); at = (at + 1) & mask) {
        const size_t home = Home(slots[at]);
        const bool stays = hole <= at ? (hole < home && home <= at) : (hole < home || home <= at);
        if (!stays) {
          slots[hole] = slots[at];
          hole = at;
        }
      }
      slots[hole] = Hash128{};
      return true;
    }
    // `id` is in no slot yet.
    void Place(const Hash128& id) {
      for (size_t i = Home(id);; i = (i + 1) & mask) {
        if (IsEmpty(slots[i])) {
          slots[i] = id;
          return;
        }
      }
    }
  };

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

  // Zeroed slots for `capacity` (a power of two). Tables from 1 MiB are mapped, with
  // their pages populated in the same call up to 64 MiB: faulting them in one by one as
  // inserts touch them cost ~20% of a growing set's inserts in a microbenchmark (a fault
  // per 256 slots, expensive on a VM); beyond 64 MiB populating would itself stop the
  // thread (over a second for a 1-2 GiB table here), so the faults are left to spread
  // over the incremental move.
  // (Transparent huge pages, asked for with madvise, made the pipeline's dedupe stage
  // ~1.5x slower here: the kernel compacts memory on the fault.) Aborts when out of
  // memory, as operator new would.
  static Table Allocate(size_t capacity) {
    const size_t bytes = capacity * sizeof(Hash128);
    void* p = nullptr;
    if (bytes >= kMapped) {
      p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | (bytes <= kPopulated ? MAP_POPULATE : 0), -1, 0);
      if (p == MAP_FAILED) p = nullptr;
    } else {
      p = std::calloc(capacity, sizeof(Hash128));
    }
    if (p == nullptr) throw std::bad_alloc();
    Table t;
    t.slots = static_cast<Hash128*>(p);
    t.mask = capacity - 1;
    t.shift = 64 - std::countr_zero(capacity);
    t.salt = Salt();
    return t;
  }
  static void Free(Table& t) {
    if (t.slots == nullptr) return;
    const size_t bytes = t.capacity() * sizeof(Hash128);
    if (bytes >= kMapped) {
      ::munmap(t.slots, bytes);
    } else {
      std::free(t.slots);
    }
    t = Table{};
  }

  void Grow() {
    if (growing()) Move(old_.capacity());  // only if the move fell behind: finish it
    if (table_.slots == nullptr) {
      table_ = Allocate(kInitialCapacity);
      return;
    }
    old_ = table_;
    table_ = Allocate(2 * old_.capacity());
    // Start right after an empty slot: from there the old table splits into whole runs.
    size_t start = 0;
    while (!IsEmpty(old_.slots[start])) ++start;  // one exists: at most 3/4 full
    next_ = (start + 1) & old_.mask;
    left_ = old_.capacity();
  }

  // Moves at least `quota` old slots — on to the end of the run it stops in — into the
  // current table; frees the old one once every slot is moved. Slots already moved are
  // empty, so entries left in the old table are found by probing from their homes
  // (their runs are whole), and an id whose home is in the moved part is not there.
  void Move(size_t quota) {
    // Targets prefetched 8 at a time: each is a cache miss.
    constexpr size_t kGroup = 8;
    Hash128 group[kGroup];
    size_t n = 0;
    auto place = [&] {
      for (size_t g = 0; g < n; ++g) table_.Place(group[g]);
      n = 0;
    };
    while (left_ > 0) {
      Hash128& s = old_.slots[next_];
      const bool empty = IsEmpty(s);
      if (!empty) {
        group[n] = s;
        __builtin_prefetch(&table_.slots[table_.Home(s)], 1);
        s = Hash128{};
        if (++n == kGroup) place();
      }
      next_ = (next_ + 1) & old_.mask;
      --left_;
      if (quota > 0) --quota;
      if (quota == 0 && empty) break;  // a run's end
    }
    place();
    if (left_ == 0) Free(old_);
  }

  Table table_;
  Table old_;         // being moved into table_ while growing()
  size_t next_ = 0;   // the next old slot to move
  size_t left_ = 0;   // old slots not yet moved
  size_t size_ = 0;   // ids in both tables
};

}  // namespace streammetrics

#endif  // STREAMMETRICS_OPERATORS_ID_SET_H_
