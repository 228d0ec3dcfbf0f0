// In-memory implementations of KeyValueStore and WindowStore. Nothing survives the
// process; they are the default for tests and for windows configured `store: memory`.
#ifndef STREAMMETRICS_STATESTORE_IN_MEMORY_STORES_H_
#define STREAMMETRICS_STATESTORE_IN_MEMORY_STORES_H_

#include <memory>
#include <string>
#include <string_view>

#include "statestore/key_value_store.h"
#include "statestore/window_store.h"

namespace streammetrics {

std::unique_ptr<KeyValueStore> NewInMemoryKeyValueStore(std::string name);
std::unique_ptr<WindowStore> NewInMemoryWindowStore(std::string name);

}  // namespace streammetrics

#endif  // STREAMMETRICS_STATESTORE_IN_MEMORY_STORES_H_
