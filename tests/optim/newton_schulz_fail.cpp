// Negative-compile tests: a Newton-Schulz schedule must be a non-empty ns_schedule value. Each
// case is compiled alone with -DDSV4_EXPECT_FAILURE -DDSV4_CASE_<case>; without them the file must
// compile (the control), so a case fails for its rule and nothing else.
// expected-error not_a_schedule: dsv4 newton_schulz<Schedule>: Schedule must be an ns_schedule<N> value
// expected-error empty_schedule: dsv4 ns_schedule: a schedule needs at least one step
#include "dsv4/optim/newton_schulz.hpp"

namespace opt = dsv4::optim;

// The control: a user-defined schedule (three quintic steps, then one stabilizing step).
constexpr auto custom =
    opt::ns_schedule<3>::repeat(opt::quintic_step).then(opt::ns_schedule<1>::repeat(opt::stabilizing_step));
static_assert(opt::newton_schulz<custom>::schedule.size() == 4);

#if defined(DSV4_EXPECT_FAILURE) && defined(DSV4_CASE_not_a_schedule)
template struct opt::newton_schulz<42>;
#endif
#if defined(DSV4_EXPECT_FAILURE) && defined(DSV4_CASE_empty_schedule)
template struct opt::ns_schedule<0>;
#endif
