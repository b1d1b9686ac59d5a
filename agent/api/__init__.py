"""The local API: POS and cashier page talk to the checkout session through it."""
