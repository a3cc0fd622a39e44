#include <cstdio>
int main() { std::puts("diffuse"); return 0; }
