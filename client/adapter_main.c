/* placeholder, replaced by the adapter tool */
int main(void) { return 0; }
