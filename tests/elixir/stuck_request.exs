# One `dspex serve` behind a real Erlang port with a request stuck in a slow LM call, for
# tests/integration/test_top.py: the test cancels it from `dspex top` and reads here what
# the Elixir caller got. Prints `STUCK <os_pid>` once the slow request is sent, then
# `REPLY <json>` with the reply to it (or `NO REPLY` after --wait seconds).
#
#   elixir tests/elixir/stuck_request.exs --python PY --root ROOT --api-base URL --worker-id ID
Code.require_file("port_replies.exs", __DIR__)

defmodule StuckRequest do
  @stuck_id 4242

  def encode(term), do: IO.iodata_to_binary(:jiffy.encode(term))
  def decode(binary), do: :jiffy.decode(binary, [:return_maps, :use_nil])

  def call(port, id, command, args) do
    frame = %{"id" => id, "command" => command, "args" => args,
              "timestamp" => DateTime.utc_now() |> DateTime.to_iso8601()}
    Port.command(port, encode(frame))
  end

  def await(port, id, ms), do: PortReplies.await(port, id, ms, &decode/1)

  def run(argv) do
    {opts, _, _} = OptionParser.parse(argv, strict: [python: :string, root: :string, api_base: :string,
                                                     worker_id: :string, model: :string, wait: :integer])
    port = Port.open({:spawn_executable, opts[:python]}, [
      :binary, :exit_status, {:packet, 4}, {:cd, opts[:root]},
      {:args, ["-m", "dspex_cli", "serve", "--mode", "pool-worker", "--worker-id", opts[:worker_id]]}
    ])
    {:os_pid, os_pid} = Port.info(port, :os_pid)
    call(port, 0, "ping", %{"initialization" => true, "worker_id" => opts[:worker_id]})
    true = await(port, 0, 20_000)["success"]
    call(port, 1, "configure_lm", %{"model" => opts[:model] || "openai/delay-30000", "api_base" => opts[:api_base],
                                    "api_key" => "sk-stuck-elixir-secret-42", "session_id" => "stuck-session"})
    true = await(port, 1, 20_000)["success"]
    signature = %{"name" => "QA", "description" => "answer",
                  "inputs" => [%{"name" => "question", "type" => "string"}],
                  "outputs" => [%{"name" => "answer", "type" => "string"}]}
    call(port, 2, "create_program", %{"id" => "stuck-prog", "signature" => signature,
                                      "session_id" => "stuck-session"})
    true = await(port, 2, 20_000)["success"]
    call(port, @stuck_id, "execute_program", %{"program_id" => "stuck-prog", "session_id" => "stuck-session",
                                               "inputs" => %{"question" => "why so slow?"}})
    IO.puts("STUCK #{os_pid}")
    try do
      reply = await(port, @stuck_id, (opts[:wait] || 90) * 1000)
      IO.puts("REPLY " <> encode(Map.take(reply, ["id", "success", "error_type", "error"])))
    rescue
      error -> IO.puts("NO REPLY #{Exception.message(error)}")
    end
    # The pool's own health check still works after the cancel.
    call(port, 5, "ping", %{})
    IO.puts("PING " <> to_string(await(port, 5, 5_000)["success"]))
    Port.close(port)
  end
end

StuckRequest.run(System.argv())
