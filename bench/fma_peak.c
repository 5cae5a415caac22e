/* The float32 arithmetic peak of this CPU: AVX-512 fused multiply-adds on registers only, one thread per core.
 *
 * The README compares the rate of ast-jax's matrix products with this figure. Twelve independent accumulators
 * hide the FMA latency, so the loop runs at the FMA units' throughput; nothing touches memory.
 *
 *     gcc -O2 -mavx512f -mfma -pthread bench/fma_peak.c -o /tmp/fma_peak && /tmp/fma_peak
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#define ACCUMULATORS 12
#define ITERATIONS 400000000L

static volatile float sink;

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *multiply_add(void *unused) {
    (void)unused;
    __m512 acc[ACCUMULATORS];
    const __m512 factor = _mm512_set1_ps(1.0000001f), term = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < ACCUMULATORS; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long n = 0; n < ITERATIONS; n++)
#pragma GCC unroll 12  /* all ACCUMULATORS: they stay in registers */
        for (int i = 0; i < ACCUMULATORS; i++) acc[i] = _mm512_fmadd_ps(acc[i], factor, term);
    float total = 0;
    for (int i = 0; i < ACCUMULATORS; i++) total += _mm512_reduce_add_ps(acc[i]);
    sink = total;
    return NULL;
}

/* GFLOP/s of `count` threads running multiply_add at once. */
static double rate(long count) {
    pthread_t threads[count];
    double start = seconds();
    for (long i = 0; i < count; i++) pthread_create(&threads[i], NULL, multiply_add, NULL);
    for (long i = 0; i < count; i++) pthread_join(threads[i], NULL);
    return (double)count * ITERATIONS * ACCUMULATORS * 16 * 2 / (seconds() - start) / 1e9;
}

int main(void) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    printf("1 thread: %.1f GFLOP/s float32\n", rate(1));
    if (cores > 1) {
        double all = rate(cores);
        printf("%ld threads: %.1f GFLOP/s float32 (%.1f a core)\n", cores, all, all / cores);
    }
    return 0;
}
