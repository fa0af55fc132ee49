# frozen_string_literal: true

# Small stand-in for the `toxiproxy` gem (RubyGems is not reachable here).
# It provides the subset of the gem's API that pgcat's Ruby helpers call
# (tests/ruby/helpers/pg_instance.rb):
#
#   Toxiproxy.populate([{name:, listen:, upstream:}, ...])
#   Toxiproxy[name] / Toxiproxy.find_by_name / Toxiproxy.all / Toxiproxy.reset
#   proxy.toxic(type, attrs)  (alias downstream), proxy.upstream(type, attrs)
#     -> collection; collection.apply { ... }; collection.toxics.each(&:save)
#   proxy.toxics -> [Toxic]; toxic.save / toxic.destroy
#   proxy.destroy / proxy.delete / proxy.enable / proxy.disable / proxy.down { }
#
# It talks to the HTTP API of scripts/pgcat-suite/toxiproxy_shim.py (or a real
# Toxiproxy server) on 127.0.0.1:8474.

require 'json'
require 'net/http'
require 'uri'
require 'socket'

class Toxiproxy
  class NotFound < StandardError; end
  class ProxyExists < StandardError; end
  class InvalidToxic < StandardError; end

  API = URI(ENV.fetch('TOXIPROXY_URL', 'http://127.0.0.1:8474'))

  def self.request(method, path, body = nil)
    klass = { get: Net::HTTP::Get, post: Net::HTTP::Post, delete: Net::HTTP::Delete }.fetch(method)
    req = klass.new(path)
    req['Content-Type'] = 'application/json'
    req.body = body.to_json unless body.nil?
    res = Net::HTTP.start(API.host, API.port) { |http| http.request(req) }
    case res
    when Net::HTTPConflict then raise ProxyExists, res.body
    when Net::HTTPNotFound then raise NotFound, res.body
    when Net::HTTPBadRequest then raise InvalidToxic, res.body
    when Net::HTTPSuccess then (res.body.nil? || res.body.empty?) ? nil : JSON.parse(res.body)
    else raise "toxiproxy #{method.upcase} #{path} failed: #{res.code} #{res.body}"
    end
  end

  def self.from_json(attrs)
    new(name: attrs['name'], listen: attrs['listen'], upstream: attrs['upstream'], enabled: attrs['enabled'])
  end

  def self.all
    (request(:get, '/proxies') || {}).values.map { |a| from_json(a) }
  end

  def self.find_by_name(name)
    all.find { |p| p.name == name.to_s }
  end

  def self.find_by_name!(name)
    find_by_name(name) or raise NotFound, "#{name} not found in #{all.map(&:name).join(', ')}"
  end

  def self.[](query)
    return all.select { |p| p.name =~ query } if query.is_a?(Regexp)

    find_by_name!(query)
  end

  def self.populate(*proxies)
    proxies = proxies.first if proxies.first.is_a?(Array)
    res = request(:post, '/populate', proxies)
    (res || {}).fetch('proxies', []).map { |a| from_json(a) }
  end

  def self.create(options)
    new(options).create
  end

  def self.reset
    request(:post, '/reset', {})
    self
  end

  def self.running?
    TCPSocket.new(API.host, API.port).close
    true
  rescue StandardError
    false
  end

  attr_reader :name, :listen, :enabled

  def initialize(options)
    @name = options[:name]
    @listen = options[:listen] || 'localhost:0'
    @upstream = options[:upstream]
    @enabled = options[:enabled]
  end

  def create
    res = Toxiproxy.request(:post, '/proxies', { name: name, listen: listen, upstream: @upstream, enabled: enabled })
    @listen = res['listen']
    self
  end

  def destroy
    Toxiproxy.request(:delete, "/proxies/#{name}")
    self
  end
  alias delete destroy

  def enable
    Toxiproxy.request(:post, "/proxies/#{name}", { enabled: true })
    self
  end

  def disable
    Toxiproxy.request(:post, "/proxies/#{name}", { enabled: false })
    self
  end

  def down
    disable
    yield
  ensure
    enable
  end

  def upstream(type = nil, attrs = {})
    return @upstream if type.nil?

    ToxicCollection.new([self]).upstream(type, attrs)
  end

  def downstream(type, attrs = {})
    ToxicCollection.new([self]).downstream(type, attrs)
  end
  alias toxic downstream
  alias toxicate downstream

  def toxics
    (Toxiproxy.request(:get, "/proxies/#{name}/toxics") || []).map do |a|
      Toxic.new(type: a['type'], name: a['name'], proxy: self, stream: a['stream'],
                toxicity: a['toxicity'], attributes: a['attributes'])
    end
  end

  class Toxic
    attr_reader :name, :type, :stream, :proxy
    attr_accessor :attributes, :toxicity

    def initialize(attrs)
      @type = attrs[:type] or raise 'Toxic type is required'
      @stream = (attrs[:stream] || 'downstream').to_s
      @name = attrs[:name] || "#{@type}_#{@stream}"
      @proxy = attrs[:proxy]
      @toxicity = attrs[:toxicity] || 1.0
      @attributes = attrs[:attributes] || {}
    end

    def save
      res = Toxiproxy.request(:post, "/proxies/#{proxy.name}/toxics",
                              { name: name, type: type, stream: stream, toxicity: toxicity, attributes: attributes })
      @attributes = res['attributes']
      @toxicity = res['toxicity']
      self
    end

    def destroy
      Toxiproxy.request(:delete, "/proxies/#{proxy.name}/toxics/#{name}")
      self
    end
  end

  class ToxicCollection
    attr_accessor :toxics
    attr_reader :proxies

    def initialize(proxies)
      @proxies = proxies
      @toxics = []
    end

    def apply
      @toxics.each(&:save)
      yield
    ensure
      @toxics.each(&:destroy)
    end

    def upstream(type, attrs = {})
      add(type, attrs, :upstream)
    end

    def downstream(type, attrs = {})
      add(type, attrs, :downstream)
    end
    alias toxic downstream
    alias toxicate downstream

    private

    def add(type, attrs, stream)
      attrs = attrs.dup
      name = attrs.delete('name') || attrs.delete(:name)
      toxicity = attrs.delete('toxicity') || attrs.delete(:toxicity)
      @proxies.each do |proxy|
        @toxics << Toxic.new(name: name, type: type, proxy: proxy, stream: stream,
                             toxicity: toxicity, attributes: attrs)
      end
      self
    end
  end
end
