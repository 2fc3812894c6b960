"""gRPC servicers: translate requests, call one service function, translate the result."""
