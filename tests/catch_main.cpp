// The Catch2 main of dsv4's host test executables.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
