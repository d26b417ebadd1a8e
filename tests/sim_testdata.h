/* sim_testdata.h - the small data set and configuration the simulator
 * tests share: Fashion-MNIST's first TRAIN_N training and TEST_N test
 * samples when the Debian package is installed, else a synthetic set of the
 * same shape (class k: a bright bar at rows 2k..2k+5 plus noise). */
#ifndef FL_SIM_TESTDATA_H
#define FL_SIM_TESTDATA_H

#include "sim.h"

#define TRAIN_N 400
#define TEST_N 200

/* IID over `clients`, partition seed 3, `holdout` held out per client. */
struct srv_sim_data *small_data(int clients, double holdout);
/* 2nn fedpara, 3 rounds, fraction 0.5, E 1, B 16, lr 0.1, seed 7, 2 threads. */
void small_config(struct srv_sim_config *c);
/* srv_sim_run that must succeed (a failed check otherwise): the result, or
 * NULL. */
struct srv_sim_result *sim_run(const struct srv_sim_config *c, const struct srv_sim_data *d);

#endif
