// The one release function for the shims' error messages (shim.h).
#include <cstdlib>

extern "C" {

void tsr_free_message(char* message) { std::free(message); }

}  // extern "C"
