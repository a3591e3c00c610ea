print("sock")
