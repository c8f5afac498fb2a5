"""`edgekit deploy` and friends: check, plan, provision, push, start, verify; status,
rollback, undeploy and logs. See docs/DEPLOY.md for the flow and the files on a node."""
