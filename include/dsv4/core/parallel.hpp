// parallel_for: the one way dsv4 spreads CPU work over threads, and the executors that run it.
//
// A loop's indices run on the executor the calling thread has installed (executor_scope), else on
// the process's default pool: a spin_pool of max_threads() threads (set_num_threads, else one per
// CPU the process may run on), made by the first loop that needs it and made again when the count
// changes. Each index is processed by exactly one thread and no reduction crosses indices, so
// results are bit-identical for any thread count and any executor: a caller that needs a
// reduction over indices does it afterwards, in index order. No loop relies on the order in which
// indices start or on two of them running at once.
//
// The default is the library's own pool, not OpenMP: a decode step is hundreds of loops of a few
// microseconds, and on OpenMP's threads their cost followed libgomp's idle policy
// (OMP_WAIT_POLICY, GOMP_SPINCOUNT), and an OpenMP team left spinning in the process took a core
// from the team doing the work. spin_pool's workers spin for at most 2 ms after a region, yielding,
// then sleep, whatever the environment says. dsv4 uses no OpenMP.
//
// An executor is anything with
//   int threads() const noexcept;                 // tasks it can run at once (>= 1): a hint for
//                                                 // how finely to split work, never for results
//   void run(std::int64_t n, task_ref f) noexcept;  // f(i) once for every i in [0, n), on any of
//                                                 // its threads (the caller's included), in any
//                                                 // order, returning once all have returned
// spin_pool below is the library's own: persistent threads that spin briefly between regions, so
// that starting and joining one costs about as much as a few cache-line transfers.
//
// A task may not throw (an exception leaving one ends the program, as it would leave an OpenMP
// region); nothing else in a loop throws: a default pool that cannot be made (no memory, no
// threads) leaves the loop to run on the calling thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif

namespace dsv4 {

// A hint to the core that the caller is spinning on a value another thread will change (x86's
// pause: the spinning thread yields its pipeline slots and leaves the loop without a
// memory-order stall).
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Waits until ready() holds: a short spin, then yielding the core between checks, so that on an
// oversubscribed machine the waiter lets the thread it waits for run instead of taking its turn.
template <class Ready>
void spin_until(Ready&& ready) noexcept {
  constexpr int relaxed_spins = 2048;
  for (int k = 0; !ready(); ++k) {
    if (k < relaxed_spins) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
}

class task_ref;

// A callable a task_ref can refer to: called with a task index.
template <class F>
concept index_task = !std::same_as<std::remove_cvref_t<F>, task_ref> &&
                     std::invocable<std::remove_reference_t<F>&, std::int64_t>;

// A non-owning reference to a callable taking a task index: what an executor receives. Two
// pointers, no allocation; the callable must outlive the reference (a temporary passed straight
// to run() does). A task may not throw (the call is noexcept: an exception inside one ends the
// program).
class task_ref {
 public:
  template <index_task F>
  task_ref(F&& f) noexcept  // NOLINT(google-explicit-constructor): passed where a task is expected
      : object_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* o, std::int64_t i) noexcept { (*static_cast<std::remove_reference_t<F>*>(o))(i); }) {}
  void operator()(std::int64_t i) const noexcept { call_(object_, i); }

 private:
  void* object_;
  void (*call_)(void*, std::int64_t) noexcept;
};

// What an engine's thread pool must provide to run dsv4's loops (see the top of the file).
template <class E>
concept executor = requires(E& e, const E& ce, std::int64_t n, task_ref f) {
  { ce.threads() }
  noexcept->std::convertible_to<int>;
  { e.run(n, f) }
  noexcept;
};

// The library's thread pool, after ggml's: threads() - 1 worker threads live as long as the pool
// and join the caller of run(), which works too. A region is published by bumping a generation
// counter that idle workers watch, and its tasks are handed out one at a time by an atomic counter.
// Between regions a worker spins on the generation (yielding now and then, so that an
// oversubscribed machine still runs the threads that hold the work) for `spin` after its last
// region, then sleeps on it (std::atomic::wait, a futex on Linux) until a region wakes it: an idle
// pool takes no core. Nothing is allocated per region.
//
// Unlike ggml's barrier, the caller does not wait for every worker: a worker enters a region
// through a gate (the region's generation, an open bit and a count of workers inside), and once the
// caller has seen every task taken it closes the gate and waits only for the workers inside, which
// are running tasks. A worker the system has not scheduled since the region began finds the gate
// closed and skips it; on a busy machine the caller then runs the tasks itself rather than waiting
// for a thread that has no core.
//
// One region at a time: a run() from a second thread while one is in flight runs its tasks on that
// thread. All members are noexcept; a pool whose threads cannot be started runs with those it got.
class spin_pool {
 public:
  // threads < 1: one per hardware thread. spin: how long an idle worker keeps spinning before it
  // sleeps.
  spin_pool() noexcept : spin_pool(0) {}
  explicit spin_pool(int threads) noexcept : spin_pool(threads, default_spin) {}
  spin_pool(int threads, std::chrono::microseconds spin) noexcept : spin_(spin) {
    if (threads < 1) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    try {
      workers_.reserve(static_cast<std::size_t>(threads - 1));
      for (int t = 1; t < threads; ++t) workers_.emplace_back([this] { work(); });
    } catch (...) {  // no memory or no more threads: the pool runs with the workers it has
    }
  }

  // Ends the workers; the pool must be idle (no run() in flight).
  ~spin_pool() {
    stop_.store(true, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_seq_cst);
    generation_.notify_all();
    for (std::thread& w : workers_) w.join();
  }
  spin_pool(const spin_pool&) = delete;
  spin_pool& operator=(const spin_pool&) = delete;

  int threads() const noexcept { return static_cast<int>(workers_.size()) + 1; }

  void run(std::int64_t n, task_ref f) noexcept {
    if (n <= 0) return;
    if (workers_.empty() || n == 1 || busy_.test_and_set(std::memory_order_acquire)) {
      for (std::int64_t i = 0; i < n; ++i) f(i);
      return;
    }
    // The task and the counter are published by the gate's release and read by a worker only
    // after it entered through the gate (an acquire). The previous region closed with no worker
    // inside, so none still reads them.
    const std::uint32_t g = generation_.load(std::memory_order_relaxed) + 1;
    task_ = &f;
    tasks_ = n;
    next_.store(0, std::memory_order_relaxed);
    gate_.store(std::uint64_t{g} << 32 | gate_open, std::memory_order_release);
    generation_.store(g, std::memory_order_seq_cst);
    // seq_cst on both sides: either this load sees a worker that went to sleep, or that worker's
    // wait sees the new generation.
    if (sleepers_.load(std::memory_order_seq_cst) > 0) generation_.notify_all();
    take_tasks();
    gate_.fetch_and(~gate_open, std::memory_order_acq_rel);
    spin_until([this] { return (gate_.load(std::memory_order_acquire) & gate_inside) == 0; });
    busy_.clear(std::memory_order_release);
  }

 private:
  // Long enough to cover the gaps between the regions of a forward pass, short enough that an idle
  // engine's workers soon give their cores back.
  static constexpr std::chrono::microseconds default_spin{2000};
  // The gate: generation << 32 | open bit | workers inside.
  static constexpr std::uint64_t gate_open = std::uint64_t{1} << 31, gate_inside = gate_open - 1;

  void take_tasks() noexcept {
    const task_ref& f = *task_;
    for (std::int64_t i; (i = next_.fetch_add(1, std::memory_order_relaxed)) < tasks_;) f(i);
  }

  void work() noexcept {
    std::uint32_t seen = 0;
    for (;;) {
      seen = next_generation(seen);
      if (stop_.load(std::memory_order_relaxed)) return;
      std::uint64_t s = gate_.load(std::memory_order_relaxed);
      bool inside = false;
      while (!inside && (s >> 32) == seen && (s & gate_open) != 0)
        inside = gate_.compare_exchange_weak(s, s + 1, std::memory_order_acquire, std::memory_order_relaxed);
      if (!inside) continue;  // closed already, or a later region (seen on the next turn)
      take_tasks();
      gate_.fetch_sub(1, std::memory_order_release);
    }
  }

  // Waits for the generation to move past `seen` and returns it: spinning, yielding every so many
  // spins, for spin_ after the call; then asleep.
  std::uint32_t next_generation(std::uint32_t seen) noexcept {
    using clock = std::chrono::steady_clock;
    constexpr int spins_between_yields = 256;
    const auto give_up = clock::now() + spin_;
    for (int k = 1;; ++k) {
      const std::uint32_t g = generation_.load(std::memory_order_acquire);
      if (g != seen) return g;
      cpu_relax();
      if (k % spins_between_yields == 0) {
        std::this_thread::yield();
        if (clock::now() >= give_up) break;
      }
    }
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    std::uint32_t g;
    while ((g = generation_.load(std::memory_order_seq_cst)) == seen) generation_.wait(seen);
    sleepers_.fetch_sub(1, std::memory_order_relaxed);
    return g;
  }

  // The generation the workers poll, the gate and the task counter each on a cache line of their
  // own: they change at different moments of a region.
  alignas(64) std::atomic<std::uint32_t> generation_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  alignas(64) std::atomic<std::uint64_t> gate_{0};
  alignas(64) std::atomic<std::int64_t> next_{0};
  alignas(64) const task_ref* task_ = nullptr;
  std::int64_t tasks_ = 0;
  std::atomic_flag busy_;
  std::chrono::microseconds spin_;
  std::vector<std::thread> workers_;
};
static_assert(executor<spin_pool>);

namespace detail {

// An executor, type-erased.
struct executor_ref {
  void* object = nullptr;
  int (*threads)(const void*) noexcept = nullptr;
  void (*run)(void*, std::int64_t, task_ref) noexcept = nullptr;
};

// e as an executor_ref (e must outlive it).
template <class E>
executor_ref erase_executor(E& e) noexcept {
  executor_ref r;
  r.object = static_cast<void*>(std::addressof(e));
  r.threads = [](const void* o) noexcept { return static_cast<int>(static_cast<const E*>(o)->threads()); };
  r.run = [](void* o, std::int64_t n, task_ref f) noexcept { static_cast<E*>(o)->run(n, f); };
  return r;
}

// Per thread: the executor its loops run on (null: the default pool), and whether the thread is
// inside a task of a loop, where a nested loop runs inline rather than asking for threads that are
// busy with the outer loop.
inline thread_local const executor_ref* installed_executor = nullptr;
inline thread_local bool inside_task = false;

// Marks the current thread as running a task for its lifetime.
class task_mark {
 public:
  task_mark() noexcept : previous_(inside_task) { inside_task = true; }
  ~task_mark() { inside_task = previous_; }
  task_mark(const task_mark&) = delete;
  task_mark& operator=(const task_mark&) = delete;

 private:
  bool previous_;
};

// Runs `tasks` tasks on executor e; task t calls f on its own indices.
template <class F>
void run_on_executor(const executor_ref& e, std::int64_t tasks, F& f) {
  auto marked = [&f](std::int64_t t) noexcept {
    const task_mark mark;
    f(t);
  };
  e.run(e.object, tasks, task_ref(marked));
}

}  // namespace detail

// Whether the calling thread's loops run on an executor it installed (executor_scope).
inline bool executor_installed() noexcept { return detail::installed_executor != nullptr; }

// Installs an executor for the loops the calling thread starts, for the scope's lifetime; the
// executor installed before (or the default) is restored at its end. Scopes nest and must end in
// reverse order on the thread that made them; the executor must outlive the scope.
class executor_scope {
 public:
  template <class E>
  explicit executor_scope(E& e) noexcept : previous_(detail::installed_executor) {
    static_assert(executor<E>,
                  "an executor needs `int threads() const noexcept` and "
                  "`void run(std::int64_t, dsv4::task_ref) noexcept`");
    ref_ = detail::erase_executor(e);
    detail::installed_executor = &ref_;
  }
  ~executor_scope() { detail::installed_executor = previous_; }
  executor_scope(const executor_scope&) = delete;
  executor_scope& operator=(const executor_scope&) = delete;

 private:
  detail::executor_ref ref_;
  const detail::executor_ref* previous_;
};

namespace detail {

// The CPUs this process may run on (its affinity mask on Linux, as libgomp counts them), else the
// hardware's threads.
inline int hardware_threads() noexcept {
#if defined(__linux__)
  cpu_set_t cpus;
  if (sched_getaffinity(0, sizeof(cpus), &cpus) == 0) return std::max(1, CPU_COUNT(&cpus));
#endif
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// The default pool of the process. Never destroyed: its workers sleep through the process's exit,
// and a loop started from a static destructor still finds it. A pool replaced after
// set_num_threads lives on while a thread still holds it (the loop in flight on it ends first),
// then ends with its workers.
struct default_team {
  std::mutex m;
  std::shared_ptr<spin_pool> pool;      // null until a loop needs it, and after the count changed
  std::atomic<int> threads{0};          // set_num_threads's count; 0: hardware_threads()
  std::atomic<std::uint64_t> epoch{0};  // counts the changes of `threads`
};
inline default_team& team() noexcept {
  static default_team* const t = new default_team;  // NOLINT(cppcoreguidelines-owning-memory): never freed
  return *t;
}

inline int default_threads() noexcept {
  static const int hardware = hardware_threads();  // read once, as libgomp does
  const int n = team().threads.load(std::memory_order_relaxed);
  return n > 0 ? n : hardware;
}

// What a thread last took from the team: the pool, as an executor, and the epoch it belongs to.
// Held per thread, so that a loop reads one atomic rather than taking the lock.
struct held_pool {
  std::shared_ptr<spin_pool> pool;
  executor_ref ref;
  std::uint64_t epoch = ~std::uint64_t{0};
};
inline thread_local held_pool held;

// The default pool as an executor; null when the pool cannot be made, where loops run on the
// calling thread.
inline const executor_ref* default_executor() noexcept {
  default_team& t = team();
  const std::uint64_t epoch = t.epoch.load(std::memory_order_acquire);
  if (held.pool && held.epoch == epoch) return &held.ref;
  try {
    const std::lock_guard<std::mutex> lock(t.m);
    if (!t.pool) t.pool = std::make_shared<spin_pool>(default_threads());
    held.pool = t.pool;
    held.ref = erase_executor(*held.pool);
    held.epoch = t.epoch.load(std::memory_order_relaxed);
  } catch (...) {  // no memory for the pool, or the lock failed
    held = {};
    return nullptr;
  }
  return &held.ref;
}

// The executor a loop of n indices started here runs on: the installed one, else the default
// pool; null where it runs as a plain loop (inside a task, fewer than two indices or threads).
inline const executor_ref* loop_executor(std::int64_t n) noexcept {
  if (inside_task || n <= 1) return nullptr;
  const executor_ref* e = installed_executor;
  if (e == nullptr) {
    if (default_threads() <= 1) {
      if (held.pool) held = {};  // a pool of more threads, dropped by set_num_threads
      return nullptr;
    }
    e = default_executor();
    if (e == nullptr) return nullptr;
  }
  return e->threads(e->object) > 1 ? e : nullptr;
}

}  // namespace detail

// Threads parallel_for will use: the installed executor's, else the default pool's, and 1 inside
// a task of a loop, where nested loops run inline.
inline int max_threads() noexcept {
  if (detail::inside_task) return 1;
  if (const detail::executor_ref* e = detail::installed_executor) return std::max(1, e->threads(e->object));
  return detail::default_threads();
}

// Sets the threads of the default pool, for every thread of the process (an installed executor
// keeps its own); n < 1 is taken as 1. The pool is made again, with the new count, by the next
// loop that needs it.
inline void set_num_threads(int n) noexcept {
  n = std::max(1, n);
  detail::default_team& t = detail::team();
  try {
    const std::lock_guard<std::mutex> lock(t.m);
    if (t.threads.load(std::memory_order_relaxed) == n) return;
    t.threads.store(n, std::memory_order_relaxed);
    t.pool.reset();
    t.epoch.fetch_add(1, std::memory_order_release);
  } catch (...) {  // the lock failed: the count stays as it was
  }
}

// Calls f(i) for every i in [begin, end), statically partitioned over the threads: one contiguous
// range per thread.
template <class F>
void parallel_for(std::int64_t begin, std::int64_t end, F&& f) {
  const std::int64_t n = end - begin;
  if (const detail::executor_ref* e = detail::loop_executor(n)) {
    const std::int64_t tasks = std::min<std::int64_t>(n, e->threads(e->object));
    const std::int64_t share = n / tasks, extra = n % tasks;  // the first `extra` ranges take one more
    auto range = [&](std::int64_t t) {
      const std::int64_t first = begin + t * share + std::min(t, extra);
      const std::int64_t last = first + share + (t < extra ? 1 : 0);
      for (std::int64_t i = first; i < last; ++i) f(i);
    };
    detail::run_on_executor(*e, tasks, range);
    return;
  }
  for (std::int64_t i = begin; i < end; ++i) f(i);
}

// Calls f(i) for every i in [begin, end), each thread taking the next index whenever it is free:
// on a busy machine a thread that is descheduled then holds the others up by at most the index it
// is on, where a static split would make them wait for its whole share. For work whose results
// do not depend on which thread computes an index (dsv4's determinism rule), only the time does.
template <class F>
void parallel_for_dynamic(std::int64_t begin, std::int64_t end, F&& f) {
  const std::int64_t n = end - begin;
  if (const detail::executor_ref* e = detail::loop_executor(n)) {
    auto one = [&](std::int64_t t) { f(begin + t); };
    detail::run_on_executor(*e, n, one);
    return;
  }
  for (std::int64_t i = begin; i < end; ++i) f(i);
}

// parallel_for_dynamic when the loop carries at least `work` multiply-adds' worth of a thread
// hand-off, a plain loop otherwise; the indices are processed identically either way.
template <class F>
void parallel_for_work(std::int64_t work, std::int64_t begin, std::int64_t end, F&& f) {
  constexpr std::int64_t min_parallel_work = std::int64_t{1} << 16;
  if (work >= min_parallel_work) {
    parallel_for_dynamic(begin, end, f);
  } else {
    for (std::int64_t i = begin; i < end; ++i) f(i);
  }
}

}  // namespace dsv4
