/* test_adapter_limits.c - adapter shapes whose sizes do not fit BLAS's int
 * arguments are refused (FL_ERANGE) before any kernel or allocation sees
 * them: from a base weight, from the factors alone, and at the edge. */
#include "adapter.h"
#include "adapter_folder.h"
#include "errors.h"
#include "peft_config.h"
#include "safetensors.h"
#include "testutil.h"

#include <string.h>

/* A fabricated 2-D tensor record (no data: the checks run on shapes). */
static struct fl_st_tensor fake2(int64_t a, int64_t b)
{
	struct fl_st_tensor t = {.ndim = 2, .shape = {a, b}};
	return t;
}

/* Shapes whose column count (in x K1 x K2) passes INT_MAX are refused with
 * FL_ERANGE before any kernel sees them, from a base weight (reshaped conv)
 * and from the factors alone (Tucker); nothing is allocated for them. */
static void test_blas_limits(void)
{
	struct fl_adapter_folder f = {.st_path = "fake.safetensors"};
	FL_CHECK(fl_peft_config_new(&f.cfg) == FL_OK);
	if (!f.cfg)
		return;
	f.cfg->use_effective_conv2d = 0;
	struct fl_st_tensor w = {.ndim = 4, .shape = {8, 1000000, 64, 64}};
	struct fl_loha_dims d = {.r = 4};
	enum fl_adapter_form form;
	fl_adapter_dims_from_base(f.cfg, &w, &d, &form);
	struct fl_st_tensor a = fake2(8, 4), b = fake2(4, 4096000000LL);
	struct fl_adapter_factors m = {.name = "conv", .t = {&a, &b, &a, &b}};
	FL_CHECK(fl_adapter_factors_check(&f, &m, &d) == FL_ERANGE);
	FL_CHECK(strstr(fl_error_msg(), "conv") && strstr(fl_error_msg(), "BLAS"));

	/* Tucker read off the factors: in 100000000, kernel 4096 x 4096. */
	struct fl_st_tensor ta = fake2(4, 8), tb = fake2(4, 100000000);
	struct fl_st_tensor tt = {.ndim = 4, .shape = {4, 4, 4096, 4096}};
	struct fl_adapter_factors mt = {.name = "tk", .t = {&ta, &tb, &ta, &tb, &tt, &tt}};
	struct fl_loha_dims dt = {.r = 4};
	FL_CHECK(fl_adapter_dims_from_factors(&f, &mt, &dt, &form) == FL_OK);
	FL_CHECK(fl_adapter_factors_check(&f, &mt, &dt) == FL_ERANGE);

	/* The largest kernel that fits still passes. */
	struct fl_loha_dims ok = {.out = 8, .in = 1, .k1 = 46340, .k2 = 46340, .r = 4};
	FL_CHECK(fl_loha_dims_check(&ok) == FL_OK);
	ok.in = 2;
	FL_CHECK(fl_loha_dims_check(&ok) == FL_ERANGE);
	fl_peft_config_free(f.cfg);
}

int main(void)
{
	FL_RUN(test_blas_limits);
	return fl_test_main_end();
}
